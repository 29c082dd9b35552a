"""Statistics over probe items (the unit of resampling). Pure functions; fixed seeds.

Intervals are 95% percentile bootstraps (scipy.stats.bootstrap). Paired quantities (drops, differences of
drops, retention) resample items jointly, so before/after and model/baseline stay matched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

N_RESAMPLES = 2000
SEED = 0


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its 95% interval and the number of items behind it."""

    value: float
    lo: float
    hi: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def fmt(self, digits: int = 3) -> str:
        return f"{self.value:.{digits}f} [{self.lo:.{digits}f}, {self.hi:.{digits}f}]"


@dataclass(frozen=True)
class Test(Estimate):
    """A mean tested against 0: two-sided sign-flip permutation p, and q (Benjamini-Hochberg across the report)."""

    p: float = 1.0
    q: float = 1.0


def tested(values: Sequence[float]) -> Test:
    """Mean with its bootstrap interval and permutation p (q = p until the report's correction sets it)."""
    est = mean_ci(values)
    p = paired_permutation_p(values)
    return Test(est.value, est.lo, est.hi, est.n, p=p, q=p)


def fmt(est: Estimate | None, digits: int = 3) -> str:
    """'value [lo, hi]' for a table cell; '–' when there is no estimate."""
    if est is None or est.value != est.value:
        return "–"
    return est.fmt(digits)


def _bootstrap(samples: Sequence[np.ndarray], statistic: Callable[..., np.ndarray], *, seed: int,
               n_resamples: int, confidence: float) -> tuple[float, float]:
    from scipy.stats import bootstrap

    res = bootstrap(tuple(samples), statistic, paired=len(samples) > 1, vectorized=True, method="percentile",
                    n_resamples=n_resamples, confidence_level=confidence, rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def mean_ci(values: Sequence[float], *, seed: int = SEED, n_resamples: int = N_RESAMPLES,
            confidence: float = 0.95) -> Estimate:
    """Mean with a percentile bootstrap interval."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    if x.size == 1 or np.all(x == x[0]):
        return Estimate(float(x.mean()), float(x.mean()), float(x.mean()), int(x.size))
    lo, hi = _bootstrap([x], lambda a, axis: a.mean(axis=axis), seed=seed, n_resamples=n_resamples,
                        confidence=confidence)
    return Estimate(float(x.mean()), lo, hi, int(x.size))


def paired_diff_ci(a: Sequence[float], b: Sequence[float], **kw: Any) -> Estimate:
    """mean(a - b) over matched items, e.g. drop = before - after."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    if x.shape != y.shape:
        raise ValueError("paired samples must have the same length")
    return mean_ci(x - y, **kw)


def ratio_ci(after: Sequence[float], before: Sequence[float], *, seed: int = SEED,
             n_resamples: int = N_RESAMPLES, confidence: float = 0.95) -> Estimate:
    """Retention = mean(after) / mean(before), items resampled in pairs."""
    x, y = np.asarray(after, float), np.asarray(before, float)
    if x.size == 0 or y.mean() == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), int(x.size))
    value = float(x.mean() / y.mean())
    if x.size == 1 or (np.all(x == x[0]) and np.all(y == y[0])):
        return Estimate(value, value, value, int(x.size))

    def stat(a: np.ndarray, b: np.ndarray, axis: int) -> np.ndarray:
        return a.mean(axis=axis) / np.maximum(b.mean(axis=axis), 1e-12)

    lo, hi = _bootstrap([x, y], stat, seed=seed, n_resamples=n_resamples, confidence=confidence)
    return Estimate(value, lo, hi, int(x.size))


def paired_permutation_p(diffs: Sequence[float], *, seed: int = SEED, n_resamples: int = 10000) -> float:
    """Two-sided sign-flip permutation p-value for mean(diffs) == 0 (paired items)."""
    from scipy.stats import permutation_test

    d = np.asarray(diffs, float)
    if d.size < 2 or np.all(d == 0):  # nothing to test
        return 1.0
    res = permutation_test((d,), lambda x, axis: x.mean(axis=axis), permutation_type="samples",
                           n_resamples=n_resamples, alternative="two-sided", vectorized=True,
                           rng=np.random.default_rng(seed))
    return float(res.pvalue)


def benjamini_hochberg(pvalues: Sequence[float]) -> list[float]:
    """BH-adjusted p-values (q-values), in the input order."""
    p = np.asarray(pvalues, float)
    n = p.size
    if n == 0:
        return []
    order = np.argsort(p)
    ranked = p[order] * n / np.arange(1, n + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(q, 1.0)
    return [float(v) for v in out]
