"""`persist plan RUN --effect D`: from a pilot run, how many items and training seeds would detect a difference D.

For each model's drop under each condition, and for each difference between the models, the pilot's records give
the spread of the per-item values and, with several seeds, of the per-seed means. The variance of a mean over S
seeds x I items is v_seeds * S_pilot / S + v_items * I_pilot / I (persist.stats.spread, the pilot's two parts
rescaled); the minimum detectable effect at 80% power is (t_0.975 + t_0.8) * se. The plan gives the smallest I
that brings it to D at the pilot's seeds, and the smallest S (at least MIN_SEEDS, 5: with fewer the interval
undercovers when seeds vary, docs/statistics.md) at the pilot's items. With a one-seed pilot the seed
part is unknown: the items figure then assumes none, and the plan says to pilot with --seeds >= 2. A condition
under which nothing is trained (Condition.trained: a prompt attack, the prompt-attack average) has no seed part at
all, whatever the pilot's seeds, and the plan says so.
D is on the 0-1 score; on the log-odds it becomes D nats divided by the mean slope of the score at the pilot's
clean items (persist.report.compare.effect_on_logodds).

The pilot's RUN/timings.jsonl (persist.timings) gives its wall time split by how each part grows with items and
seeds; `pilot_cost` reads it, and the plan predicts the wall time of each design it names on the pilot's machine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from persist.api import Record
from persist.conditions import CLEAN
from persist.report.items import by_seed, common_items, item_scores, matrix
from persist.report.model import EFFECT_NATS, EFFECT_POINTS
from persist.stats import MIN_ITEMS, Spread, mde, spread
from persist.timings import Cost, cost_of, read_spans

MAX_ITEMS = 1_000_000
MAX_SEEDS = 1000
# The fewest training seeds the plan recommends: below it the two-way seeds x items interval undercovers when seeds
# vary (bench/experiments/calibration.py, seed sd = item sd: 2 seeds 86-89%, 3 about 92%, 4 about 93%, 5 94%).
MIN_SEEDS = 5


@dataclass(frozen=True)
class PlanRow:
    what: str  # "model: finetune:bad-medical@8 (drop)" or "difference: finetune:bad-medical@8"
    statistic: str  # "log-odds (nats)" or "0-1 score"
    effect: float  # D on this statistic
    n: int
    seeds: int
    sd_items: float  # standard deviation of the per-item values (means over seeds)
    sd_seeds: float | None  # standard deviation of the per-seed means (None with one seed)
    mde: float  # at the pilot's items and seeds
    items_needed: int | None  # at the pilot's seeds (None: not reachable by items alone)
    seeds_needed: int | None  # at the pilot's items (None: one-seed pilot, or not reachable)
    unseeded: bool = False  # nothing trained under this condition (Condition.trained): no seed part exists


def planned(sp: Spread, s0: int, i0: int, s: int, i: int) -> float:
    """MDE at s seeds x i items from a pilot's spread at s0 x i0."""
    v_s, v_i = sp.var_seeds * s0 / s, sp.var_items * i0 / i
    denom = (v_s**2 / (s - 1) if s > 1 and v_s > 0 else 0.0) + (v_i**2 / (i - 1) if i > 1 else 0.0)
    df = (v_s + v_i) ** 2 / denom if denom > 0 else float(max(i - 1, 1))
    return mde(float(np.sqrt(v_s + v_i)), df)


def smallest(f: Callable[[int], float], lo: int, hi: int, target: float) -> int | None:
    """The smallest k in [lo, hi] with f(k) <= target (f decreasing), or None."""
    if f(hi) > target:
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if f(mid) <= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def plan_row(what: str, statistic: str, d: npt.NDArray[np.float64], effect: float, trained: bool = True) -> PlanRow:
    s0, i0 = d.shape
    sp = spread(d)
    items = smallest(lambda i: planned(sp, s0, i0, s0, i), MIN_ITEMS, MAX_ITEMS, effect)
    seeds = None if s0 < 2 else smallest(lambda s: planned(sp, s0, i0, s, i0), MIN_SEEDS, MAX_SEEDS, effect)
    return PlanRow(what=what, statistic=statistic, effect=effect, n=i0, seeds=s0,
                   sd_items=float(d.mean(axis=0).std(ddof=1)), sd_seeds=float(d.mean(axis=1).std(ddof=1))
                   if s0 > 1 else None, mde=planned(sp, s0, i0, s0, i0), items_needed=items, seeds_needed=seeds,
                   unseeded=not trained)


def plan(records: list[Record], effect_points: float = EFFECT_POINTS, effect_nats: float = EFFECT_NATS
         ) -> list[PlanRow]:
    """A PlanRow per model and condition (its drop) and per difference between the models, on both statistics,
    each against the effect that matters in its own units (points on the 0-1 score, nats on the log-odds)."""
    scores = by_seed(item_scores(records))
    stats = [("score", "0-1 score", effect_points), ("logodds", "log-odds (nats)", effect_nats)]
    roles = sorted({r for r, _ in scores}, key=lambda r: (r != "model", r))
    conditions = sorted({c for _, c in scores if c != CLEAN}, key=lambda c: c.label)
    out = []
    for cond in conditions:
        found = {}
        for role in roles:
            before, after = scores.get((role, CLEAN), {}).get(0), scores.get((role, cond))
            if before and after and common_items(before, after):
                found[role] = (before, after)
        for field, label, d_effect in stats:
            for role, (before, after) in found.items():
                ids = common_items(before, after)
                if len(ids) > 2 and all(getattr(a[i], field) is not None for a in after.values() for i in ids):
                    out.append(plan_row(f"{role}: {cond.label}", label, matrix(before, after, ids, field),
                                        d_effect, cond.trained))
            if {"model", "baseline"} <= set(found):
                (mb, ma), (bb, ba) = found["model"], found["baseline"]
                seeds = sorted(set(ma) & set(ba))
                ma, ba = {s: ma[s] for s in seeds}, {s: ba[s] for s in seeds}
                ids = sorted(set(common_items(mb, ma)) & set(common_items(bb, ba)))
                if len(ids) > 2 and all(getattr(p[i], field) is not None
                                        for p in (mb, bb, *ma.values(), *ba.values()) for i in ids):
                    out.append(plan_row(f"difference: {cond.label}", label,
                                        matrix(mb, ma, ids, field) - matrix(bb, ba, ids, field), d_effect,
                                        cond.trained))
    return out


def run_records(folder: Path) -> list[Record]:
    """A run's alignment records (not its capability check or register-only suite), plus a study's per-item
    intervention records (as its report computes them)."""
    from persist.capability import split_records
    from persist.report.model import StudyMeta, from_json
    from persist.report.rerender import open_run
    from persist.report.study import derived_records

    header, records = open_run(folder)
    records, _ = split_records(records, (header.get("capability") or {}).get("suite"))
    records, _ = split_records(records, (header.get("register") or {}).get("suite"))
    if header.get("study_meta"):
        meta = from_json(StudyMeta, header["study_meta"])
        records = records + derived_records(item_scores(records), meta)
    return records


def pilot_cost(folder: Path, records: list[Record]) -> Cost | None:
    """The pilot's wall time by how it grows (None: the run has no timings, e.g. it was made before they existed).
    Its items are the probe items scored clean; its seeds the header's."""
    import json

    from persist.behaviour import SUFFIX

    header = json.loads((Path(folder) / "header.json").read_text(encoding="utf-8"))
    seeds = int((header.get("config") or {}).get("seeds") or 1)
    probes = [r for r in records if not r.suite.endswith(SUFFIX)]  # the behaviour answers: N items, whatever --limit
    items = len({r.item_id for r in probes if r.condition == CLEAN.label})
    return cost_of(read_spans(folder), {r.suite for r in probes}, items, seeds)


def recommended(rows: list[PlanRow]) -> tuple[int, int] | None:
    """The design the plan recommends: the pilot's seeds and the most items any difference between the models needs
    on the log-odds (the primary statistic) at those seeds; None when no difference row reaches the effect."""
    need = [r for r in rows if r.what.startswith("difference:") and r.statistic.startswith("log-odds")]
    if not need or any(r.items_needed is None for r in need):
        return None
    return max(r.items_needed or 0 for r in need), need[0].seeds
