"""`persist probes audit`: can a suite measure this model? Per suite and trait, on clean items:

  saturated    share of items whose 0-1 likelihood score is within 0.01 of 0 or 1 (a drop there is invisible)
  |log-odds|   median distance of the aligned-vs-misaligned log-odds from 0 (nats), and its spread across
               items (median absolute deviation): how much of the gap is the references' wording
  length       mean bytes of the aligned and of the misaligned references (sides > 15% apart are flagged)
  resolution   how much a uniform 1-nat move of every item's log-odds moves the mean 0-1 score
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import median
from typing import Any

from persist.api import ScoreResult
from persist.probes.likelihood import TEMPERATURE, LikelihoodScorer, sigmoid
from persist.runner import clean_variant
from persist.schema import Item
from persist.suites import length_balance, select, unbalanced


@dataclass(frozen=True)
class AuditRow:
    suite: str
    trait: str  # "(all)" for the whole suite
    n: int
    saturated: float
    median_abs_logodds: float
    mad_logodds: float
    aligned_bytes: float
    misaligned_bytes: float
    resolution: float

    @property
    def length_flag(self) -> bool:
        return unbalanced(self.aligned_bytes, self.misaligned_bytes) is not None


def audit_rows(suite_name: str, items: list[Item], results: list[ScoreResult]) -> list[AuditRow]:
    groups: dict[str, list[int]] = {"(all)": list(range(len(items)))}
    for k, it in enumerate(items):
        groups.setdefault(it.trait, []).append(k)
    rows = []
    for trait, idx in groups.items():
        g = [results[k].details["logodds"] for k in idx]
        s = [float(results[k].score or 0.0) for k in idx]
        per_nat = [100 / results[k].details["ref_bytes"] / TEMPERATURE for k in idx]  # score-scale units of one nat
        mid = median(g)
        a, m = length_balance([items[k] for k in idx])
        moved = [abs(sigmoid(results[k].details["logodds_per_100b"] / TEMPERATURE + u) - sk)
                 for k, u, sk in zip(idx, per_nat, s, strict=True)]
        rows.append(AuditRow(suite=suite_name, trait=trait, n=len(idx),
                             saturated=sum(v < 0.01 or v > 0.99 for v in s) / len(s),
                             median_abs_logodds=median(abs(x) for x in g), mad_logodds=median(abs(x - mid) for x in g),
                             aligned_bytes=a, misaligned_bytes=m, resolution=sum(moved) / len(moved)))
    return rows


def audit_suite(target: Any, suite: Any, limit: int | None, batch_size: int = 32) -> list[AuditRow]:
    """Score a subset of the suite's items clean (the likelihood scorer) and summarise them."""
    every = suite.load()
    items = select(every, min(limit, len(every)) if limit else None)
    scorer = LikelihoodScorer()
    units = [clean_variant(i) for i in items]
    results: list[ScoreResult] = []
    for k in range(0, len(units), batch_size):
        results += scorer.score(target, units[k: k + batch_size])
    return audit_rows(suite.name, items, results)
