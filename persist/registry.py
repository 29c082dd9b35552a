"""Name -> plugin registries with a duplicate guard and "did you mean" suggestions, and the recorded form of a
plugin (`PluginSpec`: registry name + parameters) from which a registry builds it again.

A registered plugin is either a class (a dataclass whose fields are its parameters; string values from the
command line are converted to the field types) or an object with `from_params(params, **context)` (recipes, which
are data with overrides). `context` carries what a run provides but does not record as a parameter, such as the
load options a judge scorer opens its judge model with.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from persist.errors import ConfigError, UnknownNameError, suggest, unknown_name  # noqa: F401  (re-exported)

T = TypeVar("T")


@dataclass(frozen=True)
class PluginSpec:
    """A plugin as a run records it: its registry name and its parameters (`name:key=value:key=value`)."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, kind: str = "plugin") -> PluginSpec:
        """'many-shot:k=16:x=y' -> PluginSpec('many-shot', {'k': '16', 'x': 'y'}) (values stay strings)."""
        name, *rest = text.strip().split(":")
        params = {}
        for part in rest:
            key, sep, value = part.partition("=")
            if not sep or not key:
                raise ConfigError(f"{kind} spec {text!r}: parameters are written name:key=value")
            params[key] = value
        if not name:
            raise ConfigError(f"{kind} spec {text!r}: begins with the {kind}'s name")
        return cls(name, params)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": {k: list(v) if isinstance(v, tuple) else v
                                              for k, v in sorted(self.params.items())}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PluginSpec:
        return cls(d["name"], dict(d.get("params", {})))


def _convert(kind: str, name: str, key: str, value: Any, hint: Any) -> Any:
    """A parameter value (a string from the command line, or JSON from a header) as the field's type."""
    target = hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() == "none"):
            return None
        target = args[0] if len(args) == 1 else hint
    try:
        if target is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes"):
                return True
            if str(value).lower() in ("0", "false", "no"):
                return False
            raise ValueError
        if target in (int, float):
            if isinstance(value, bool):
                raise ValueError
            return target(value)
        if typing.get_origin(target) is tuple:
            items = value.split("|") if isinstance(value, str) else list(value)
            return tuple(str(v) for v in items if v != "")
        return value
    except (TypeError, ValueError):
        type_name = getattr(target, "__name__", str(target))
        raise ConfigError(f"{kind} {name!r}: {key}={value!r} is not a valid {type_name}") from None


def construct(cls: Any, kind: str, spec: PluginSpec, context: Mapping[str, Any]) -> Any:
    """Instantiate a dataclass plugin from a spec: unknown keys refused, values converted to the field types,
    context passed where the constructor takes it."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"{kind} {spec.name!r}: a registered class must be a dataclass (its fields are its "
                        "parameters)")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name not in context}
    unknown = sorted(set(spec.params) - set(known))
    if unknown:
        raise ConfigError(f"{kind} {spec.name!r} has no parameter {unknown[0]!r}; it takes: "
                          f"{', '.join(known) or 'none'}")
    kwargs = {k: _convert(kind, spec.name, k, v, hints[k]) for k, v in spec.params.items()}
    accepted = inspect.signature(cls).parameters
    kwargs.update({k: v for k, v in context.items() if k in accepted})
    return cls(**kwargs)


def params_of(obj: Any) -> dict[str, Any]:
    """A dataclass plugin's parameters (its init fields), as recorded in a PluginSpec."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init and f.metadata.get("param", True)}


class Registry(Generic[T]):
    """A named collection of plugins (attacks, scorers, suites, recipes)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, obj: T) -> T:
        """Class decorator: `@REGISTRY.register` files the class under its `name` attribute."""
        self.add(obj.name, obj)  # type: ignore[attr-defined]
        return obj

    def build(self, spec: PluginSpec | str, **context: Any) -> Any:
        """The plugin a spec describes (a string is parsed as `name:key=value...`)."""
        if isinstance(spec, str):
            spec = PluginSpec.parse(spec, self.kind)
        factory: Any = self.get(spec.name)
        if hasattr(factory, "from_params"):
            return factory.from_params(dict(spec.params), **context)
        return construct(factory, self.kind, spec, context)

    def add(self, name: str, obj: T) -> None:
        if name in self._items and self._items[name] is not obj:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = obj

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            if not self._items:
                raise UnknownNameError(f"unknown {self.kind} {name!r}: no {self.kind}s are registered; load the "
                                       "plugins first (persist.plugins.load())") from None
            raise unknown_name(self.kind, name, list(self._items)) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


# The plugin registries: the only module-level mutable state in persist. Plugin packages fill them on import.
SUITES: Registry = Registry("suite")
SUITE_FORMATS: Registry = Registry("suite format")  # FORMAT:SOURCE suites, e.g. mc:mmlu_test.csv
SCORERS: Registry = Registry("scorer")
ATTACKS: Registry = Registry("attack")
RECIPES: Registry = Registry("recipe")

