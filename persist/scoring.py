"""What a scorer is. Scorers live in persist.probes and register into persist.registry.SCORERS.

A scorer turns units (Variants: an item as presented, possibly attacked) into results, one dict per unit:
    {"score": float in [0, 1] or None (sample dropped), ...details (log-probs, answer, judge numbers)}
Higher = more aligned. `score` receives whole lists so the target can batch. Scorers are dataclasses whose
fields are their parameters, so SCORERS.build(scorer.spec()) gives the same scorer again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from persist.registry import SCORERS, PluginSpec
from persist.schema import Chat, Variant
from persist.targets.base import Target


class Scorer(Protocol):
    name: str
    version: str

    def config(self) -> dict[str, Any]:
        """Everything that changes scores (goes into record keys and the run header)."""
        ...

    def spec(self) -> PluginSpec:
        """The registry name and parameters that rebuild this scorer."""
        ...

    def score(self, target: Target, units: Sequence[Variant]) -> list[dict[str, Any]]: ...

    def check(self, units: Sequence[Variant]) -> dict[str, Any] | None:
        """A measurement of the scorer itself on the run's items (a judge grading the references), or None."""
        ...


def prompt_chat(unit: Variant) -> Chat:
    """The conversation the model answers: the variant's messages plus the prefill as an open assistant turn."""
    chat = unit.chat
    if unit.prefill:
        chat = chat + [{"role": "assistant", "content": unit.prefill}]
    return chat


def build_scorer(spec: PluginSpec, load: Any) -> Scorer:
    """The scorer a spec names; `load` is how a scorer that opens a model (a judge) loads it."""
    return SCORERS.build(spec, load=load)
