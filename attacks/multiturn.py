"""Multi-turn escalation (crescendo): a scripted conversation that talks the assistant out of its caution over
several turns, then the probe question. Scripts are ours (attacks/data/escalation_scripts.jsonl)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from persist.attacks.base import Attack
from persist.errors import ConfigError
from persist.registry import ATTACKS
from persist.schema import Item, Message

SCRIPTS = Path(__file__).parent / "data" / "escalation_scripts.jsonl"


@lru_cache(maxsize=1)
def load_scripts() -> tuple[tuple[str, tuple[Message, ...]], ...]:
    out = []
    for line in SCRIPTS.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            out.append((row["id"], tuple(Message(t["role"], t["content"]) for t in row["turns"])))
    return tuple(out)


@ATTACKS.register
@dataclass(frozen=True)
class Escalation(Attack):
    name = "escalation"
    description = "multi-turn crescendo: scripted turns that wear down caution, then the question; scripts=N"
    adds_context = True
    scripts: int = 2

    def __post_init__(self) -> None:
        if self.scripts < 1:
            raise ConfigError(f"escalation scripts must be >= 1, got {self.scripts}")

    def variants(self, item: Item) -> list[tuple[tuple[Message, ...], str]]:
        chosen = load_scripts()[: self.scripts]
        system = [m for m in item.messages if m.role == "system"]
        rest = [m for m in item.messages if m.role != "system"]
        return [((*system, *turns, *rest), "") for _, turns in chosen]
