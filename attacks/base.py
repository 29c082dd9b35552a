"""The attack interface: a deterministic transform Item -> [Variant] that never mutates the item.

Each Variant records the source item id, the attack's name, version and params, and its index among the
variants of that item (provenance), as garak's buffs record which attempt an attempt came from.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, fields
from typing import Any, ClassVar

from persist import conditions
from persist.conditions import Condition
from persist.registry import PluginSpec
from persist.schema import Item, Message, Variant


@dataclass(frozen=True)
class Attack:
    """Base class. Subclasses set name/version/description and implement `variants(item)`."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    description: ClassVar[str] = ""
    # Whether an attack is expected to *raise* scores (a control, like a helpful persona).
    control: ClassVar[bool] = False
    # The probe domain the attack targets (reports split its drop in-domain / out-of-domain), if any.
    in_domain: ClassVar[str | None] = None
    # The attack only adds text around the item (a system message, earlier turns, text before or after the
    # question), so a length-matched neutral control exists for it (`matched-context`, attacks/controls.py).
    adds_context: ClassVar[bool] = False

    def params(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {f.name: f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
                for f in fields(cls)}

    def spec(self) -> PluginSpec:
        """What a run records: ATTACKS.build(attack.spec()) gives this attack again."""
        return PluginSpec(self.name, self.params())

    @property
    def control_for(self) -> Condition | None:
        """The attack condition this attack is the matched control of (None for ordinary attacks)."""
        return None

    @property
    def condition(self) -> Condition:
        """attack:NAME plus any non-default parameters, so two settings of one attack never share a label."""
        return conditions.attack(self.name, self.params(), self.defaults())

    def variants(self, item: Item) -> list[tuple[tuple[Message, ...], str]]:
        """(messages, prefill) pairs for this item. Subclasses implement this."""
        raise NotImplementedError

    def transform(self, item: Item) -> list[Variant]:
        params = self.params()
        return [Variant(item=item, messages=messages, attack=self.name, attack_version=self.version,
                        params=params, index=i, prefill=prefill)
                for i, (messages, prefill) in enumerate(self.variants(item))]


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


__all__ = ["Attack", "pick", "replace_last_user", "with_system"]
