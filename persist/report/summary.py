"""Summaries of a run's records: mean score per group with bootstrap intervals and n."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from persist.stats import mean_ci


def group_scores(records: Iterable[dict[str, Any]], by: tuple[str, ...], **filters: Any) -> dict[tuple, list[float]]:
    """Scores grouped by record fields (records with score None, i.e. dropped samples, are left out)."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in records:
        if any(r.get(k) != v for k, v in filters.items()) or r.get("score") is None:
            continue
        groups[tuple(r.get(k) for k in by)].append(float(r["score"]))
    return dict(groups)


def score_table(records: list[dict[str, Any]], role: str = "model") -> dict[str, list[dict[str, Any]]]:
    """{'suite': rows, 'trait': rows, 'domain': rows}; each row: name, mean, lo, hi, n (clean condition)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for level in ("suite", "trait", "domain"):
        groups = group_scores(records, (level,), role=role, condition="clean")
        out[level] = [{"name": k[0], **mean_ci(v).to_dict()} for k, v in sorted(groups.items())]
    return out
