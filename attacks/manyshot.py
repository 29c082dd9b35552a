"""Many-shot attack: k fabricated earlier exchanges in which the assistant answered in a misaligned way.

The shots come from our own pool (attacks/data/manyshot_pool.jsonl), chosen deterministically per item and
never from the probe suites, so no probe reference leaks into another item's prompt.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from persist.attacks.base import Attack
from persist.errors import ConfigError
from persist.registry import ATTACKS
from persist.schema import Item, Message

POOL = Path(__file__).parent / "data" / "manyshot_pool.jsonl"


@lru_cache(maxsize=1)
def load_pool() -> tuple[tuple[str, str, str], ...]:
    rows = [json.loads(line) for line in POOL.read_text(encoding="utf-8").splitlines() if line.strip()]
    return tuple((r["id"], r["user"], r["assistant"]) for r in rows)


@ATTACKS.register
@dataclass(frozen=True)
class ManyShot(Attack):
    name = "many-shot"
    description = "k fabricated dialogue turns in which the assistant answers misaligned, then the question; k=8"
    adds_context = True
    k: int = 8

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ConfigError(f"many-shot k must be >= 1, got {self.k}")

    def variants(self, item: Item) -> list[tuple[tuple[Message, ...], str]]:
        pool = load_pool()
        if self.k > len(pool):
            raise ConfigError(f"many-shot k={self.k} is larger than the pool of {len(pool)} shots")
        # A per-item order that is stable across runs: sort the pool by a hash of (item id, shot id).
        ranked = sorted(pool, key=lambda s: hashlib.sha256(f"{item.id}:{s[0]}".encode()).hexdigest())
        shots: list[Message] = []
        for _, user, assistant in ranked[: self.k]:
            shots += [Message("user", user), Message("assistant", assistant)]
        system = [m for m in item.messages if m.role == "system"]
        rest = [m for m in item.messages if m.role != "system"]
        return [((*system, *shots, *rest), "")]
