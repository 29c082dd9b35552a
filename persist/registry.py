"""Name -> object registries with a duplicate guard and "did you mean" suggestions."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from persist.errors import UnknownNameError

T = TypeVar("T")


def suggest(name: str, choices: list[str]) -> str:
    """A ' (did you mean X?)' suffix, or '' when nothing is close."""
    if not name or not choices:
        return ""
    # Compare with whole names and with their beginnings, so "smollm" suggests "smollm2-135m-instruct".
    def score(choice: str) -> float:
        whole = difflib.SequenceMatcher(None, name, choice).ratio()
        head = difflib.SequenceMatcher(None, name, choice[: len(name) + 1]).ratio()
        return max(whole, head)

    best = max(choices, key=score)
    return f" (did you mean {best!r}?)" if score(best) >= 0.6 else ""


def unknown_name(kind: str, name: str, choices: list[str]) -> UnknownNameError:
    """The error for an unknown name: the name, a suggestion, and the valid names."""
    return UnknownNameError(
        f"unknown {kind} {name!r}{suggest(name, choices)}; choose from: {', '.join(sorted(choices)) or '(none)'}"
    )


class Registry(Generic[T]):
    """A named collection of plugins (attacks, scorers, suites, recipes)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form: `@registry.register("name")`."""

        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        if name in self._items and self._items[name] is not obj:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = obj

    def get(self, name: str) -> T:
        if name not in self._items:
            load_plugins()  # library use without the CLI: the built-in plugins register on first lookup
        try:
            return self._items[name]
        except KeyError:
            raise unknown_name(self.kind, name, list(self._items)) from None

    def names(self) -> list[str]:
        load_plugins()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


# The plugin registries: the only module-level mutable state in persist. Plugin packages fill them on import.
SUITES: Registry = Registry("suite")
SCORERS: Registry = Registry("scorer")
ATTACKS: Registry = Registry("attack")
RECIPES: Registry = Registry("recipe")


def load_plugins() -> None:
    """Import the plugin packages so they register themselves (the CLI and tests call this)."""
    import attacks  # noqa: F401
    import finetune_attacks  # noqa: F401
    import probes  # noqa: F401
