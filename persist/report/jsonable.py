"""Plain JSON for the report's frozen dataclasses: nested dataclasses become objects, a Condition its label,
tuples lists; `from_json` reads them back into equal objects (persist.report.model uses these)."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from persist.conditions import Condition
from persist.errors import DataError


def to_json(obj: Any) -> Any:
    """Plain JSON (dicts, lists, numbers, strings) for a report object."""
    if isinstance(obj, Condition):
        return obj.label
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if (value is None and f.metadata.get("omit_none")) or (
                    "omit_default" in f.metadata and value == f.metadata["omit_default"]):
                continue
            out[f.name] = to_json(value)
        return out
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    return obj


def from_json(tp: Any, data: Any) -> Any:
    """The object of type `tp` that `to_json` turned into `data`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if data is None:
            return None
        return from_json(args[0], data) if len(args) == 1 else data
    if tp is Condition:
        return Condition.parse(data)
    if tp is Any or tp in (int, float, str, bool):
        return data
    members = typing.get_args(tp)
    if origin is tuple and len(members) > 1 and members[1] is not Ellipsis:
        return tuple(from_json(arg, v) for arg, v in zip(members, data, strict=True))  # tuple[A, B, C]: one type each
    if origin in (list, tuple):
        (arg, *_) = typing.get_args(tp) or (Any,)
        values = [from_json(arg, v) for v in data]
        return tuple(values) if origin is tuple else values
    if origin is dict:
        _, arg = typing.get_args(tp)
        return {k: from_json(arg, v) for k, v in data.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        names = [f.name for f in dataclasses.fields(tp) if f.init]
        missing = [n for n in names if n not in data and _required(tp, n)]
        if missing:
            raise DataError(f"report.json: {tp.__name__} lacks {', '.join(missing)}; re-render it with "
                            "`persist report RUN`")
        return tp(**{n: from_json(hints[n], data[n]) for n in names if n in data})
    return data


def _required(tp: Any, name: str) -> bool:
    f = tp.__dataclass_fields__[name]
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
