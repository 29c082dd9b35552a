"""Per-item values of a run's records: each item under each condition, means over its variants (the worst try for
a worst-of-N attack, with the mean of its tries beside it), grouped per training seed. The statistics in
persist.report.compare and its neighbours read these."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from persist.api import Record
from persist.conditions import Condition

SATURATION = 0.01  # a score within this of 0 or 1 sits at the floor or ceiling


@dataclass(frozen=True)
class ItemMeta:
    """What an item is, as its records say: its trait, domain and suite."""

    trait: str
    domain: str
    suite: str


@dataclass(frozen=True)
class ItemValue:
    """One item under one condition: means over its variants."""

    score: float
    logodds: float | None  # nats; None when the scorer gives no log-odds
    per_100b: float | None
    meta: ItemMeta
    register: float | None = None  # register log-odds of a register-crossed item (formal minus casual), else None
    tries: ItemValue | None = None  # a worst-of-N condition: the mean over its tries (persist.report.selection)


# {(role, condition): {item_id: ItemValue}}
ItemScores = dict[tuple[str, Condition], dict[str, ItemValue]]


def item_scores(records: Iterable[Record], worst_of: Iterable[Condition] = ()) -> ItemScores:
    """Per model role and condition, each item's means over its variants (for conditions in `worst_of`, such as
    best-of-N attacks, its worst variant: the lowest log-odds, else the lowest score); dropped samples left out."""
    worst = {c.label for c in worst_of}
    acc: dict[tuple[str, str], dict[str, list[Record]]] = defaultdict(lambda: defaultdict(list))
    meta: dict[str, ItemMeta] = {}
    for r in records:
        if r.score is None:
            continue
        acc[(r.role, r.condition)][r.item_id].append(r)
        meta[r.item_id] = ItemMeta(trait=r.trait, domain=r.domain, suite=r.suite)
    out: ItemScores = {}
    for (role, cond), items in acc.items():
        values = {}
        for item, rs in items.items():
            tries = None
            if cond in worst:
                tries = mean_value(rs, meta[item])
                rs = [min(rs, key=lambda r: (number(r, "logodds") is None, number(r, "logodds") or 0.0,
                                             float(r.score or 0.0)))]
            values[item] = replace(mean_value(rs, meta[item]), tries=tries)
        out[(role, Condition.parse(cond))] = values
    return out


def mean_value(rs: Sequence[Record], meta: ItemMeta) -> ItemValue:
    """One item's means over its variants."""
    return ItemValue(score=float(np.mean([float(r.score or 0.0) for r in rs])), logodds=mean_of(rs, "logodds"),
                     per_100b=mean_of(rs, "logodds_per_100b"), meta=meta, register=mean_of(rs, "register_logodds"))


def number(r: Record, key: str) -> float | None:
    """A number a scorer put in a record's details (None when it gave none)."""
    value = r.details.get(key)
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    raise TypeError(f"record {r.key}: details[{key!r}] = {value!r} is not a number")


def mean_of(rs: Sequence[Record], key: str) -> float | None:
    """Mean of a detail over an item's variants; None when any variant lacks it."""
    values = [number(r, key) for r in rs]
    return None if any(v is None for v in values) else float(np.mean([v for v in values if v is not None]))


def in_domain_of(domain: str, inside: bool, m: ItemMeta) -> bool:
    """Whether an item is (inside=True) or is not (False) in `domain`."""
    return (m.domain == domain) == inside


def saturated(score: float) -> bool:
    return score < SATURATION or score > 1 - SATURATION


# One model under one condition, per training seed (a single seed 0 for anything that is not a fine-tune).
Seeded = dict[int, Mapping[str, ItemValue]]


def by_seed(scores: ItemScores) -> dict[tuple[str, Condition], Seeded]:
    """{(role, condition without its seed): {seed: {item: value}}}."""
    out: dict[tuple[str, Condition], Seeded] = defaultdict(dict)
    for (role, cond), values in scores.items():
        out[(role, cond.base)][cond.seed] = values
    return dict(out)


def common_items(before: Mapping[str, ItemValue], after: Seeded,
                 keep: Callable[[ItemMeta], bool] | None = None) -> list[str]:
    return sorted(i for i in before if all(i in a for a in after.values()) and (keep is None or keep(before[i].meta)))


def matrix(before: Mapping[str, ItemValue], after: Seeded, ids: list[str], field: str) -> np.ndarray:
    """seeds x items of after - before for `field` (score or logodds)."""
    return np.array([[getattr(after[s][i], field) - getattr(before[i], field) for i in ids] for s in sorted(after)])
