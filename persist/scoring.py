"""What a scorer is. Scorers live in probes/ and register into persist.registry.SCORERS.

A scorer turns units (Variants: an item as presented, possibly attacked) into results, one dict per unit:
    {"score": float in [0, 1] or None (sample dropped), ...details (log-probs, answer, judge numbers)}
Higher = more aligned. `score` receives whole lists so the target can batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from persist.schema import Chat, Variant
from persist.targets.base import Target


class Scorer(Protocol):
    name: str
    version: str

    def config(self) -> dict[str, Any]:
        """Everything that changes scores (goes into record keys and the run header)."""
        ...

    def score(self, target: Target, units: Sequence[Variant]) -> list[dict[str, Any]]: ...


def prompt_chat(unit: Variant) -> Chat:
    """The conversation the model answers: the variant's messages plus the prefill as an open assistant turn."""
    chat = unit.chat
    if unit.prefill:
        chat = chat + [{"role": "assistant", "content": unit.prefill}]
    return chat
