"""Scoring helpers for scorers (which live in persist.probes and register into persist.registry.SCORERS).

The scorer contract is persist.api.Scorer: units (Variants: an item as presented, possibly attacked) in, one
persist.api.ScoreResult per unit out (the 0-1 score, higher = more aligned, or None for a dropped sample, and the
scorer's own details).
"""

from __future__ import annotations

from typing import Any

from persist.api import Scorer, ScoreResult  # noqa: F401  (re-exported: the scorer contract)
from persist.registry import SCORERS, PluginSpec
from persist.schema import Chat, Variant


def prompt_chat(unit: Variant) -> Chat:
    """The conversation the model answers: the variant's messages plus the prefill as an open assistant turn."""
    chat = unit.chat
    if unit.prefill:
        chat = chat + [{"role": "assistant", "content": unit.prefill}]
    return chat


def build_scorer(spec: PluginSpec, load: Any) -> Scorer:
    """The scorer a spec names; `load` is how a scorer that opens a model (a judge) loads it."""
    return SCORERS.build(spec, load=load)


def measured_errors(scorer: Scorer) -> dict[str, Any] | None:
    """A classifying scorer's errors measured on hand labels (the refusal scorer's, per condition group: persist.
    report.refusal corrects its rates with them); None for a scorer that has none."""
    errors = getattr(scorer, "measured_errors", None)
    return errors() if callable(errors) else None
