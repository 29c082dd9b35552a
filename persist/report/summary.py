"""Summaries of a run's records: mean score per group with bootstrap intervals and n."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from persist.api import Record
from persist.conditions import CLEAN
from persist.stats import Estimate, mean_ci


@dataclass(frozen=True)
class ScoreRow:
    name: str
    estimate: Estimate


def group_scores(records: Iterable[Record], by: tuple[str, ...], **filters: str) -> dict[tuple, list[float]]:
    """Scores grouped by record fields, named as Record's (records with score None, i.e. dropped samples, are left
    out)."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in records:
        row = r.to_dict()
        if r.score is None or any(row[k] != v for k, v in filters.items()):
            continue
        groups[tuple(row[k] for k in by)].append(float(r.score))
    return dict(groups)


def score_table(records: list[Record], role: str = "model") -> dict[str, list[ScoreRow]]:
    """Clean scores per suite, per trait and per domain: {'suite': rows, 'trait': rows, 'domain': rows}."""
    out: dict[str, list[ScoreRow]] = {}
    for level in ("suite", "trait", "domain"):
        groups = group_scores(records, (level,), role=role, condition=CLEAN.label)
        out[level] = [ScoreRow(str(k[0]), mean_ci(v)) for k, v in sorted(groups.items())]
    return out
