"""Statistics over probe items (the unit of resampling), and over training seeds when there are several.
Pure functions; fixed seeds. docs/statistics.md explains the choices and gives their simulation results.

Items only (one seed, or no training): the mean and a 95% studentised bootstrap interval (bootstrap-t: each
resample's mean is divided by that resample's own standard error), which keeps its coverage on skewed and
bounded per-item values where the percentile bootstrap falls to ~92% at 24 items. Paired quantities (drops,
differences of drops) are means of per-item differences, so before/after and model/baseline stay matched.

Seeds x items (several training seeds, crossed with the same items): the grand mean, with the variance of the
seed means / S plus the variance of the item means / I (a two-way decomposition, slightly conservative), and a t
interval with Satterthwaite's degrees of freedom. With 3 seeds a bootstrap over seeds cannot reach the t_2 tails
that the seed component needs (measured: 84-92% coverage); this interval keeps 93-96%.

Every tested mean carries a p-value (sign-flip permutation over items; the t test above with seeds), a
Benjamini-Hochberg q set by the report, and its minimum detectable effect at 80% power. A cell with fewer than
MIN_ITEMS items gets its value and n but no interval; a ratio is given only where its denominator is clearly
away from 0.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

N_RESAMPLES = 2000
DEGENERATE_SHARE = 0.01  # resamples without spread above this share: percentile interval (mean_ci)
SEED = 0
MIN_ITEMS = 5  # fewer items: the estimate and its n, no interval
ALPHA = 0.05
POWER = 0.8
RATIO_MAX_CV = 0.25  # retention only when the denominator's mean is >= 4 standard errors from 0
RATIO_RANGE = (0.0, 10.0)  # a retention interval reaching outside this is reported as unstable
NAN = float("nan")


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its 95% interval and the number of items (and training seeds) behind it.

    seed_sd: the standard deviation of the per-seed estimates; seed_share: the share of the estimate's variance
    that comes from seeds rather than items (both only with several seeds). undefined: why there is no estimate."""

    value: float
    lo: float
    hi: float
    n: int
    seeds: int = field(default=1, metadata={"omit_default": 1})
    seed_sd: float | None = field(default=None, metadata={"omit_none": True})
    seed_share: float | None = field(default=None, metadata={"omit_none": True})
    undefined: str | None = field(default=None, metadata={"omit_none": True})

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)

    @property
    def has_interval(self) -> bool:
        return self.lo == self.lo and self.hi == self.hi

    def fmt(self, digits: int = 3) -> str:
        if self.undefined:
            return f"undefined: {self.undefined}"
        if not self.has_interval:
            return f"{self.value:.{digits}f} (n={self.n}, too few for an interval)"
        return f"{self.value:.{digits}f} [{self.lo:.{digits}f}, {self.hi:.{digits}f}]"

    @property
    def dominant(self) -> str | None:
        """Which source of variation dominates the interval: 'seeds' or 'items' (only with several seeds)."""
        if self.seed_share is None:
            return None
        return "seeds" if self.seed_share > 0.5 else "items"


@dataclass(frozen=True)
class Tested(Estimate):
    """A mean tested against 0: p (two-sided), q (Benjamini-Hochberg across the report, set by the report) and the
    minimum detectable effect at 80% power for this many items and seeds, from the observed spread."""

    p: float = 1.0
    q: float = 1.0
    mde: float = NAN


def fmt(est: Estimate | None, digits: int = 3) -> str:
    """'value [lo, hi]' for a table cell; '–' when there is no estimate."""
    if est is None or (est.value != est.value and not est.undefined):
        return "–"
    return est.fmt(digits)


# ---------------------------------------------------------------- items only


def mean_ci(values: Sequence[float], *, seed: int = SEED, n_resamples: int = N_RESAMPLES,
            confidence: float = 0.95) -> Estimate:
    """Mean with a studentised bootstrap (bootstrap-t) interval; no interval below MIN_ITEMS items. The interval is
    kept within the observed range of the values: no resampled mean can leave it, while bootstrap-t at a handful of
    items with many ties (0-1 scores) can divide by a near-zero resampled spread and run far outside it."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return Estimate(NAN, NAN, NAN, 0)
    m = float(x.mean())
    if x.size < MIN_ITEMS:
        return Estimate(m, NAN, NAN, int(x.size))
    se = float(x.std(ddof=1)) / np.sqrt(x.size)
    if se == 0:
        return Estimate(m, m, m, int(x.size))
    rng = np.random.default_rng(seed)
    xs = x[rng.integers(0, x.size, (n_resamples, x.size))]
    se_b = xs.std(axis=1, ddof=1) / np.sqrt(x.size)
    a = (1 - confidence) / 2
    if np.mean(se_b < se * 1e-3) > DEGENERATE_SHARE:
        # mostly ties (e.g. paired 0/1 accuracies with a few discordant items): many resamples have no spread, and
        # studentising by it is meaningless; the percentile interval of the resampled means is the sane one there
        lo, hi = (float(v) for v in np.quantile(xs.mean(axis=1), [a, 1 - a]))
        return Estimate(m, min(lo, m), max(hi, m), int(x.size))
    t = (xs.mean(axis=1) - m) / np.maximum(se_b, se * 1e-6)
    t_lo, t_hi = np.quantile(t, [a, 1 - a])
    lo, hi = max(float(m - t_hi * se), float(x.min())), min(float(m - t_lo * se), float(x.max()))
    return Estimate(m, lo, hi, int(x.size))


def paired_diff_ci(a: Sequence[float], b: Sequence[float], **kw: Any) -> Estimate:
    """mean(a - b) over matched items, e.g. drop = before - after."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    if x.shape != y.shape:
        raise ValueError("paired samples must have the same length")
    return mean_ci(x - y, **kw)


def ratio_ci(after: Sequence[float], before: Sequence[float], *, seed: int = SEED,
             n_resamples: int = N_RESAMPLES, confidence: float = 0.95) -> Estimate:
    """Retention = mean(after) / mean(before), items resampled in pairs (percentile interval).

    Undefined where the denominator is not clearly away from 0 (its mean under 4 standard errors), where the
    interval would reach outside [0, 10], and below MIN_ITEMS items: a ratio over a denominator that resamples to
    ~0 has no useful interval."""
    x, y = np.asarray(after, float), np.asarray(before, float)
    n = int(x.size)
    if n == 0:
        return Estimate(NAN, NAN, NAN, 0)
    if y.mean() <= 0 or (n > 1 and y.std(ddof=1) / np.sqrt(n) > RATIO_MAX_CV * y.mean()):
        return Estimate(NAN, NAN, NAN, n, undefined="before ≈ 0")
    value = float(x.mean() / y.mean())
    if n < MIN_ITEMS:
        return Estimate(value, NAN, NAN, n)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, (n_resamples, n))
    ratios = x[idx].mean(axis=1) / np.maximum(y[idx].mean(axis=1), 1e-12)
    a = (1 - confidence) / 2
    lo, hi = (float(v) for v in np.quantile(ratios, [a, 1 - a]))
    if lo < RATIO_RANGE[0] or hi > RATIO_RANGE[1]:
        return Estimate(value, NAN, NAN, n, undefined="unstable ratio (before too close to 0)")
    return Estimate(value, lo, hi, n)


def paired_permutation_p(diffs: Sequence[float], *, seed: int = SEED, n_resamples: int = 10000) -> float:
    """Two-sided sign-flip permutation p-value for mean(diffs) == 0 (paired items).

    Exact over all 2^n sign patterns when there are at most n_resamples of them, else n_resamples random patterns
    from a generator seeded with `seed`, counted with the +1 of a randomised test. This is the computation of
    scipy.stats.permutation_test(permutation_type="samples", vectorized=True, rng=default_rng(seed)) done here
    with numpy alone, so that it runs on every SciPy (`rng=` needs SciPy 1.15; on 1.11-1.14 that call raised):
    the same draws (one Generator.permuted call over an (n_resamples, n, 2) index array), the same memory layout
    for the means (so the same floating-point sums), the same tolerance for ties (100 machine epsilons relative to
    the observed mean). tests/test_stats_edges.py checks that the p-values are bit-identical to SciPy's."""
    d = np.asarray(diffs, float)
    if d.size < 2 or np.all(d == 0):  # nothing to test
        return 1.0
    n = d.size
    observed = d.mean(axis=-1)
    if n_resamples >= 2**n:  # every sign pattern once
        flips = np.array(list(itertools.product((0, 1), repeat=n)), dtype=np.intp)
        total, adjustment = 2**n, 0
    else:
        rng = np.random.default_rng(seed)
        flips = rng.permuted(np.tile(np.arange(2), (n_resamples, n, 1)), axis=-1)[..., 0]
        total, adjustment = n_resamples, 1
    # item i keeps its sign where its permuted pair starts with index 0; the means are taken over the same strided
    # (items, patterns, 2) buffer SciPy builds, because numpy's summation order follows the memory layout
    buf = np.zeros((n, flips.shape[0], 2))
    buf[..., 0] = np.where(flips.T == 0, d[:, None], -d[:, None])
    null = buf[..., 0].T.mean(axis=-1)
    gamma = abs(np.finfo(float).eps * 100 * observed)
    less = (np.count_nonzero(null <= observed + gamma) + adjustment) / (total + adjustment)
    greater = (np.count_nonzero(null >= observed - gamma) + adjustment) / (total + adjustment)
    return float(np.clip(min(less, greater) * 2, 0.0, 1.0))


def mde(se: float, df: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Minimum detectable effect: the true mean a two-sided level-alpha test detects with the given power."""
    from scipy.stats import t

    if not se == se or df < 1:
        return NAN
    return float((t.ppf(1 - alpha / 2, df) + t.ppf(power, df)) * se)


def power_at(effect: float, se: float, df: float, alpha: float = ALPHA) -> float:
    """Analytic power of the two-sided t test (noncentral t) for a true mean `effect`."""
    from scipy.stats import nct, t

    crit = t.ppf(1 - alpha / 2, df)
    shift = effect / se
    return float(1 - nct.cdf(crit, df, shift) + nct.cdf(-crit, df, shift))


# ---------------------------------------------------------------- seeds x items


@dataclass(frozen=True)
class Spread:
    """The variance of a grand mean over S seeds x I items, in its two parts, and its degrees of freedom."""

    var_seeds: float  # variance of the seed means / S
    var_items: float  # variance of the item means / I
    df: float

    @property
    def se(self) -> float:
        return float(np.sqrt(self.var_seeds + self.var_items))


def spread(matrix: np.ndarray) -> Spread:
    s, i = matrix.shape
    v_s = float(matrix.mean(axis=1).var(ddof=1)) / s if s > 1 else 0.0
    v_i = float(matrix.mean(axis=0).var(ddof=1)) / i if i > 1 else 0.0
    denom = (v_s**2 / (s - 1) if s > 1 else 0.0) + (v_i**2 / (i - 1) if i > 1 else 0.0)
    df = (v_s + v_i) ** 2 / denom if denom > 0 else float(max(i - 1, 1))
    return Spread(v_s, v_i, df)


def seeded_ci(matrix: Any, confidence: float = 0.95) -> Estimate:
    """Grand mean over seeds (rows) x items (columns) with a two-way t interval; one row = items only."""
    from scipy.stats import t

    d = np.asarray(matrix, float)
    if d.ndim == 1 or d.shape[0] == 1:
        return mean_ci(d.ravel())
    s, i = d.shape
    m = float(d.mean())
    seed_sd = float(d.mean(axis=1).std(ddof=1))
    if i < MIN_ITEMS:
        return Estimate(m, NAN, NAN, i, seeds=s, seed_sd=seed_sd)
    sp = spread(d)
    half = float(t.ppf(1 - (1 - confidence) / 2, sp.df)) * sp.se
    share = sp.var_seeds / (sp.var_seeds + sp.var_items) if sp.var_seeds + sp.var_items > 0 else 0.0
    return Estimate(m, m - half, m + half, i, seeds=s, seed_sd=seed_sd, seed_share=share)


def tested(values: Any) -> Tested:
    """The mean of per-item values (a vector) or of per-seed, per-item values (a seeds x items matrix), tested
    against 0, with its minimum detectable effect at 80% power (q = p until the report's correction sets it)."""
    from scipy.stats import t

    d = np.asarray(values, float)
    if d.ndim == 2 and d.shape[0] > 1:
        est = seeded_ci(d)
        sp = spread(d)
        p = float(2 * t.sf(abs(est.value) / sp.se, sp.df)) if sp.se > 0 else (1.0 if est.value == 0 else 0.0)
        detectable = mde(sp.se, sp.df) if d.shape[1] >= MIN_ITEMS else NAN
    else:
        x = d.ravel()
        est = mean_ci(x)
        p = paired_permutation_p(x)
        detectable = mde(float(x.std(ddof=1)) / np.sqrt(x.size), x.size - 1) if x.size >= MIN_ITEMS else NAN
    return Tested(**{f: getattr(est, f) for f in est.__dataclass_fields__}, p=p, q=p, mde=detectable)


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


