"""Best-of-N augmentation (Hughes et al. 2024): N random character-level perturbations of the question; an item's
attacked value is its worst over the N (the lowest log-odds, else the lowest score).

A minimum over N draws falls even when the draws are harmless, so the attack ships its own control:
`best-of-n-control` takes N meaning-preserving re-samples of the clean question (extra spaces and line breaks
only) and is scored the same way; the report gives attack minus control (persist adds the control whenever the
attack is run). Perturbations: random capitalisation of each letter, swaps of neighbouring letters inside words,
and scrambling the middle letters of longer words, each with a probability scaled by `strength`; seeded per item.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from typing import ClassVar

from persist.attacks.base import Attack, replace_last_user
from persist.conditions import Condition
from persist.errors import ConfigError
from persist.registry import ATTACKS
from persist.schema import Item, Message


def rng_for(item: Item, seed: int, k: int, salt: str) -> random.Random:
    return random.Random(int(hashlib.sha256(f"{salt}:{seed}:{item.id}:{k}".encode()).hexdigest(), 16))


def perturb(text: str, rng: random.Random, strength: float) -> str:
    """Character-level noise: scrambled word middles, swapped neighbours, random capitals."""
    def word(m: re.Match) -> str:
        w = list(m.group(0))
        if len(w) > 3 and rng.random() < 0.6 * strength:
            middle = w[1:-1]
            rng.shuffle(middle)
            w = [w[0], *middle, w[-1]]
        if len(w) > 1 and rng.random() < 0.3 * strength:
            j = rng.randrange(len(w) - 1)
            w[j], w[j + 1] = w[j + 1], w[j]
        return "".join(w)

    text = re.sub(r"[A-Za-z]+", word, text)
    return "".join(c.swapcase() if c.isalpha() and rng.random() < 0.6 * strength else c for c in text)


def respace(text: str, rng: random.Random) -> str:
    """The same words with a few doubled spaces and a line break: the meaning untouched."""
    parts = text.split(" ")
    return "".join(p + (" " if k == len(parts) - 1 else rng.choice(["  ", " ", " ", "\n"]))
                   for k, p in enumerate(parts)).rstrip()


@ATTACKS.register
@dataclass(frozen=True)
class BestOfN(Attack):
    name = "best-of-n"
    version = "1"
    description = ("N random character-level perturbations of the question, worst of N per item (with its own "
                   "worst-of-N control, best-of-n-control); n=N, strength=S (0-1), seed=K")
    aggregate: ClassVar[str] = "min"
    n: int = 8
    strength: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1 or not 0 <= self.strength <= 1:
            raise ConfigError(f"best-of-n: n >= 1 and 0 <= strength <= 1 (got n={self.n}, strength={self.strength})")

    def companions(self) -> tuple[str, ...]:
        """The control this attack is always run with."""
        return (f"best-of-n-control:n={self.n}:strength={self.strength:g}:seed={self.seed}",)

    def variants(self, item: Item) -> list[tuple[tuple[Message, ...], str]]:
        q = item.messages[-1].content
        return [(replace_last_user(item, perturb(q, rng_for(item, self.seed, k, "bon"), self.strength)), "")
                for k in range(self.n)]


@ATTACKS.register
@dataclass(frozen=True)
class BestOfNControl(Attack):
    name = "best-of-n-control"
    version = "1"
    description = "control for best-of-n: N meaning-preserving re-spacings of the question, worst of N per item"
    aggregate: ClassVar[str] = "min"
    control = True
    n: int = 8
    strength: float = 0.5  # of the best-of-n run this controls (pairs them; re-spacing does not use it)
    seed: int = 0

    @property
    def control_for(self) -> Condition:
        return BestOfN(n=self.n, strength=self.strength, seed=self.seed).condition

    def variants(self, item: Item) -> list[tuple[tuple[Message, ...], str]]:
        q = item.messages[-1].content
        return [(replace_last_user(item, respace(q, rng_for(item, self.seed, k, "respace"))), "")
                for k in range(self.n)]
