"""Calibration of persist's intervals by simulation: coverage, null false-positive rate, power vs analytic.

    .venv/bin/python bench/experiments/stats_calibration.py     (about a minute; docs/statistics.md quotes its table)
    .venv/bin/python bench/experiments/stats_calibration.py --tiny    # 20 studies per row (smoke test)

Per scenario, 1000 simulated studies (400 for seeds x items): the share of 95% intervals that contain the true
mean (coverage; for a true mean of 0 that is 1 - false-positive rate), for persist's intervals and for the plain
percentile bootstrap and t interval beside them; and the detection rate of a true effect against the
noncentral-t power that `persist plan` and the MDE columns use.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from scipy import stats as st

from persist.stats import mean_ci, power_at, seeded_ci


def percentile(x: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    m = x[rng.integers(0, x.size, (2000, x.size))].mean(axis=1)
    lo, hi = np.quantile(m, [0.025, 0.975])
    return float(lo), float(hi)


def t_interval(x: np.ndarray) -> tuple[float, float]:
    h = st.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return float(x.mean() - h), float(x.mean() + h)


def items_only(sims: int = 1000) -> None:
    rng = np.random.default_rng(0)
    scenarios = {
        "normal": lambda n: rng.normal(0, 1, n),
        "skewed (exponential)": lambda n: rng.exponential(1, n) - 1,
        "0-1 score drops": lambda n: rng.beta(0.6, 1.8, n) - rng.beta(0.6, 1.8, n),
        "heavy tails (t, 3 df)": lambda n: rng.standard_t(3, n),
    }
    print("| items | per-item values | persist (bootstrap-t) | percentile bootstrap | t interval |")
    print("| --- | --- | --- | --- | --- |")
    for n in (8, 24, 96):
        for name, draw in scenarios.items():
            hits = np.zeros(3)
            for _ in range(sims):
                x = draw(n)
                e = mean_ci(x, seed=int(rng.integers(1 << 30)))
                for k, (lo, hi) in enumerate(((e.lo, e.hi), percentile(x, rng), t_interval(x))):
                    hits[k] += lo <= 0 <= hi
            print(f"| {n} | {name} | " + " | ".join(f"{100 * h / sims:.1f}%" for h in hits) + " |")


def seeds_by_items(sims: int = 400, resamples: int = 1000) -> None:
    rng = np.random.default_rng(1)
    print("\n| seeds x items | seed sd / item sd | persist (two-way t) | seeds x items percentile bootstrap |")
    print("| --- | --- | --- | --- |")
    for s in (3, 5):
        for sa in (0.0, 0.5, 1.0):
            hits = np.zeros(2)
            for _ in range(sims):
                d = rng.normal(0, sa, (s, 1)) + rng.normal(0, 1, (1, 24)) + rng.normal(0, 1, (s, 24))
                e = seeded_ci(d)
                means = [d[np.ix_(rng.integers(0, s, s), rng.integers(0, 24, 24))].mean() for _ in range(resamples)]
                lo, hi = np.quantile(means, [0.025, 0.975])
                hits += [e.lo <= 0 <= e.hi, lo <= 0 <= hi]
            print(f"| {s} x 24 | {sa} | " + " | ".join(f"{100 * h / sims:.1f}%" for h in hits) + " |")


def power(sims: int = 1000) -> None:
    rng = np.random.default_rng(2)
    print("\n| items | true effect / sd | detected (interval excludes 0) | analytic power |")
    print("| --- | --- | --- | --- |")
    for n, effect in ((24, 0.3), (24, 0.45), (24, 0.6), (96, 0.3)):
        det = np.mean([not (e.lo <= 0 <= e.hi) for e in (mean_ci(effect + rng.normal(0, 1, n))
                                                         for _ in range(sims))])
        print(f"| {n} | {effect} | {det:.1%} | {power_at(effect, 1 / np.sqrt(n), n - 1):.1%} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="20 simulated studies per row, 50 resamples: the tables' "
                    "shape only (smoke test)")
    args = ap.parse_args(argv)
    if args.tiny:
        items_only(20)
        seeds_by_items(20, 50)
        power(20)
    else:
        items_only()
        seeds_by_items()
        power()
    return 0


if __name__ == "__main__":
    sys.exit(main())
