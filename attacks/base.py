"""Helpers for attacks. The attack contract itself (the `Attack` base class and its declared properties) is
persist.api.Attack, re-exported here; an attack is a deterministic transform Item -> [Variant] that never
mutates the item.

Each Variant records the source item id, the attack's name, version and params, and its index among the
variants of that item (provenance), as garak's buffs record which attempt an attempt came from.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from persist.api import Attack
from persist.schema import Item, Message


def with_system(item: Item, system: str) -> tuple[Message, ...]:
    """Put `system` first, merged with any system message the item already has (chat templates want one)."""
    rest = [m for m in item.messages if m.role != "system"]
    own = [m.content for m in item.messages if m.role == "system"]
    return (Message("system", "\n\n".join([system, *own])), *rest)


def replace_last_user(item: Item, text: str) -> tuple[Message, ...]:
    return (*item.messages[:-1], Message("user", text))


def pick(options: Sequence[str], item: Item, salt: str = "") -> str:
    """A deterministic choice per item (stable across runs and machines, unlike hash())."""
    h = int(hashlib.sha256(f"{salt}:{item.id}".encode()).hexdigest(), 16)
    return options[h % len(options)]


def same_settings(name: str, attack: Attack) -> str:
    """The spec of attack `name` with `attack`'s non-default parameters: how an attack names the control that shares
    its settings (pair-control for pair, gcg-suffix-control for gcg-suffix, ...)."""
    defaults = attack.defaults()
    return name + "".join(f":{k}={v}" for k, v in attack.params().items() if v != defaults[k])


__all__ = ["Attack", "pick", "replace_last_user", "same_settings", "with_system"]
