"""Reading user JSONL with errors that say file:line, and loading probe items from it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from persist.errors import ConfigError, DataError
from persist.schema import Item

T = TypeVar("T")


def read_text(path: Path, *, give: str, empty: str, name: str | None = None, save_as: str = "UTF-8") -> str:
    """A user's text file (a BOM is dropped), or one clear line: no such file (ConfigError, `give` says what to
    pass; `name` replaces the path there, e.g. "harmbench:PATH"), not UTF-8 or empty (DataError, file:line)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{name or path}: no such file ({give})")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); save the file as {save_as}") from None
    if not text.strip():
        raise DataError(f"{path}:1: the file is empty; {empty}")
    return text


def iter_jsonl(path: Path) -> Iterator[tuple[int, Any, str | None]]:
    """Yield (line number, parsed object or None, error or None) for every non-blank line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, expected a .jsonl file") from None
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield lineno, None, f"not UTF-8 (byte {exc.start}); save the file as UTF-8"
            continue
        try:
            yield lineno, json.loads(text), None
        except json.JSONDecodeError as exc:
            yield lineno, None, f"bad JSON ({exc.msg} at column {exc.colno})"


def parse_jsonl(path: Path, parse: Callable[[Any], T], *, id_of: Callable[[T], str] | None = None
                ) -> tuple[list[T], list[str]]:
    """Parse every line with `parse` (which raises ValueError); return (objects, 'file:line: problem' list)."""
    objects: list[T] = []
    errors: list[str] = []
    seen: dict[str, int] = {}
    for lineno, obj, err in iter_jsonl(path):
        if err is None:
            try:
                parsed = parse(obj)
            except (ValueError, TypeError) as exc:
                err = str(exc)
            else:
                key = id_of(parsed) if id_of else None
                if key is not None and key in seen:
                    err = f"duplicate id {key!r} (first on line {seen[key]})"
                else:
                    if key is not None:
                        seen[key] = lineno
                    objects.append(parsed)
        if err is not None:
            errors.append(f"{path}:{lineno}: {err}")
    if not objects and not errors:
        errors.append(f"{path}: the file is empty")
    return objects, errors


def raise_errors(errors: list[str], hint: str = "persist probes validate FILE") -> None:
    """One line for the user: the first problem, and how many more there are."""
    if len(errors) == 1:
        raise DataError(errors[0])
    if errors:
        raise DataError(f"{errors[0]} (+{len(errors) - 1} more problems; `{hint}` lists them all)")


def load_items(path: Path) -> list[Item]:
    """All items of a JSONL file, or a DataError naming the first bad line."""
    items, errors = parse_jsonl(path, Item.from_dict, id_of=lambda it: it.id)
    raise_errors(errors)
    return items


def stable_hash(obj: Any, n: int = 16) -> str:
    """sha256 of canonical JSON: the same object always gives the same key."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:n]
