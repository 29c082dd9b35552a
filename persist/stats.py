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

0/1 outcomes per item (issue 29): a proportion gets the Wilson interval (wilson_ci; Clopper-Pearson below 10
trials), a paired difference of proportions Newcombe's hybrid score interval (newcombe_paired_ci); interval_for
picks among these and bootstrap-t by the kind of values (classify: binary, tied, continuous). No interval is ever
zero-width for finite n: values without spread get no_spread_ci, unless the caller declares them identical by
construction (identical=True), which the Estimate carries and fmt prints instead of an interval.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

N_RESAMPLES = 2000  # bootstrap resamples of every interval a report prints
N_PERMUTATIONS = 10000  # random sign patterns of a permutation test (exact up to 13 items)
DEGENERATE_SHARE = 0.01  # resamples without spread above this share: percentile interval (mean_ci)
SEED = 0
MIN_ITEMS = 5  # fewer items: the estimate and its n, no interval
ALPHA = 0.05
POWER = 0.8
RATIO_MAX_CV = 0.25  # retention only when the denominator's mean is >= 4 standard errors from 0
RATIO_RANGE = (0.0, 10.0)  # a retention interval reaching outside this is reported as unstable
NAN = float("nan")
# Per-item values as the functions below take them: a list, or a numpy vector (what the reports slice out).
Floats: TypeAlias = Sequence[float] | npt.NDArray[np.float64]


@dataclass
class Resampling:
    """How many resamples the intervals and tests take when a caller gives none: the report's defaults, changed
    only through resampling() (the calibration harness, bench/experiments/calibration.py, runs thousands of
    simulated reports with fewer)."""

    bootstrap: int = N_RESAMPLES
    permutations: int = N_PERMUTATIONS


RESAMPLING = Resampling()


@contextmanager
def resampling(*, bootstrap: int | None = None, permutations: int | None = None) -> Iterator[Resampling]:
    """Within the block, intervals and tests take `bootstrap` resamples and `permutations` sign patterns by
    default; the report's defaults come back after it, also on an exception."""
    saved = (RESAMPLING.bootstrap, RESAMPLING.permutations)
    if bootstrap is not None:
        RESAMPLING.bootstrap = int(bootstrap)
    if permutations is not None:
        RESAMPLING.permutations = int(permutations)
    try:
        yield RESAMPLING
    finally:
        RESAMPLING.bootstrap, RESAMPLING.permutations = saved


@lru_cache(maxsize=16)
def resample_indices(seed: int, n: int, n_resamples: int) -> npt.NDArray[np.int64]:
    """The bootstrap's item indices, (n_resamples, n): default_rng(seed).integers(0, n, ...), drawn once per
    (seed, n, n_resamples) and reused (a report resamples the same item count many times). Read-only."""
    idx = np.random.default_rng(seed).integers(0, n, (n_resamples, n))
    idx.flags.writeable = False
    return idx


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its 95% interval and the number of items (and training seeds) behind it.

    seed_sd: the standard deviation of the per-seed estimates; seed_share: the share of the estimate's variance
    that comes from seeds rather than items (both only with several seeds). undefined: why there is no estimate.
    identical: the caller declared the compared values identical by construction (mean_ci(..., identical=True));
    lo == hi == value then, and fmt prints "value (identical by construction)" instead of an interval."""

    value: float
    lo: float
    hi: float
    n: int
    seeds: int = field(default=1, metadata={"omit_default": 1})
    seed_sd: float | None = field(default=None, metadata={"omit_none": True})
    seed_share: float | None = field(default=None, metadata={"omit_none": True})
    undefined: str | None = field(default=None, metadata={"omit_none": True})
    identical: bool = field(default=False, metadata={"omit_default": False})

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)

    @property
    def has_interval(self) -> bool:
        return self.lo == self.lo and self.hi == self.hi

    def fmt(self, digits: int = 3) -> str:
        if self.undefined:
            return f"undefined: {self.undefined}"
        if self.identical:
            return f"{self.value:.{digits}f} (identical by construction)"
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


def mean_ci(values: Floats, *, seed: int = SEED, n_resamples: int | None = None,
            confidence: float = 0.95, identical: bool = False,
            bounds: tuple[float, float] | None = None) -> Estimate:
    """Mean with a studentised bootstrap (bootstrap-t) interval; no interval below MIN_ITEMS items. The interval is
    kept within the observed range of the values: no resampled mean can leave it, while bootstrap-t at a handful of
    items with many ties (0-1 scores) can divide by a near-zero resampled spread and run far outside it.

    All values equal (no spread): never the zero-width [m, m], which claims a certainty that n items cannot give,
    unless the caller declares the values identical by construction (identical=True: e.g. a model compared with
    itself, a dose-0 fine-tune that is the clean model); the Estimate then carries identical=True, lo == hi == m,
    and fmt() prints "m (identical by construction)", which is what a report should print in place of an interval
    (tables that format lo/hi themselves check `est.identical`). Otherwise no_spread_ci gives the interval: the
    values' range `bounds` (given, or value_range(values): [0, 1] when every value lies in it, else [-1, 1] when
    every value lies in that, else unbounded; (-inf, inf) for unbounded values, as no spread seen says nothing
    about the scale of the spread). Values with spread: the same numbers as before these two arguments existed."""
    n_resamples = n_resamples or RESAMPLING.bootstrap
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return Estimate(NAN, NAN, NAN, 0)
    m = float(x.mean())
    if identical:
        if np.any(x != x[0]):
            raise ValueError("identical=True, but the values differ")
        return Estimate(m, m, m, int(x.size), identical=True)
    if x.size < MIN_ITEMS:
        return Estimate(m, NAN, NAN, int(x.size))
    se = float(x.std(ddof=1)) / np.sqrt(x.size)
    if se == 0:
        return no_spread_ci(m, int(x.size), bounds=value_range(x) if bounds is None else bounds, level=confidence)
    xs = x[resample_indices(seed, x.size, n_resamples)]
    se_b = xs.std(axis=1, ddof=1) / np.sqrt(x.size)
    a = (1 - confidence) / 2
    if np.mean(se_b < se * 1e-3) > DEGENERATE_SHARE:
        # mostly ties (e.g. paired 0/1 accuracies with a few discordant items): many resamples have no spread, and
        # studentising by it is meaningless; the percentile interval of the resampled means is the sane one there
        # (for 0/1 data interval_for gives Wilson and Newcombe intervals, which keep their coverage where this
        # one does not: see tests/test_stats_edges.py)
        lo, hi = (float(v) for v in np.quantile(xs.mean(axis=1), [a, 1 - a]))
        return Estimate(m, min(lo, m), max(hi, m), int(x.size))
    t = (xs.mean(axis=1) - m) / np.maximum(se_b, se * 1e-6)
    t_lo, t_hi = np.quantile(t, [a, 1 - a])
    lo, hi = max(float(m - t_hi * se), float(x.min())), min(float(m - t_lo * se), float(x.max()))
    return Estimate(m, lo, hi, int(x.size))


UNBOUNDED = (-np.inf, np.inf)


def value_range(values: Any, *, difference: bool = False) -> tuple[float, float]:
    """The range per-item values of this project are known to live in, judged from the values: [0, 1] (0-1 scores,
    0/1 outcomes) when every value lies in it, [-1, 1] (paired differences of those) when every value lies in that,
    else UNBOUNDED (log-odds and other unbounded values). difference=True: the values are paired differences, so
    [0, 1] is not assumed (an all-zero difference can be negative as well as positive)."""
    x = np.asarray(values, dtype=float)
    if x.size and not difference and x.min() >= 0 and x.max() <= 1:
        return (0.0, 1.0)
    if x.size and x.min() >= -1 and x.max() <= 1:
        return (-1.0, 1.0)
    return UNBOUNDED


def no_spread_ci(value: float, n: int, *, bounds: tuple[float, float], level: float = 0.95) -> Estimate:
    """Interval for the mean of n values that all equal `value`, from values known to lie within `bounds`.

    No item differed from the others, so the share q of items that would differ is at most u, the upper limit of
    wilson_ci(0, n) (the Clopper-Pearson limit below EXACT_BELOW items); an item that differs moves the mean by at
    most its distance to the bound, so the mean lies in [value - q (value - low), value + q (high - value)]. For 0/1
    values this is exactly wilson_ci at 0/n and n/n ([0, u] and [1 - u, 1]); for an all-zero paired difference of
    0/1 values, [-u, u]. Unbounded values (bounds UNBOUNDED): (-inf, inf). Below MIN_ITEMS items: no interval."""
    if n < MIN_ITEMS:
        return Estimate(value, NAN, NAN, n)
    low, high = bounds
    if not low <= value <= high:
        raise ValueError(f"value {value} outside its bounds {bounds}")
    u = wilson_ci(0, n, level).hi
    return Estimate(value, float(value - u * (value - low)), float(value + u * (high - value)), n)


def paired_diff_ci(a: Floats, b: Floats, **kw: Any) -> Estimate:
    """mean(a - b) over matched items, e.g. drop = before - after. Without spread in the differences, the range
    assumed for them is [-1, 1] when a and b are 0-1 values (see mean_ci), unless kw gives `bounds`."""
    x, y = np.asarray(a, float), np.asarray(b, float)
    if x.shape != y.shape:
        raise ValueError("paired samples must have the same length")
    if kw.get("bounds") is None:
        low, high = value_range(np.r_[x, y])
        kw["bounds"] = (low - high, high - low)
    return mean_ci(x - y, **kw)


# ---------------------------------------------------------------- proportions (0/1 outcomes per item)

EXACT_BELOW = 10  # fewer trials: Clopper-Pearson instead of Wilson (wilson_ci)
TIED_DISTINCT = 3  # at most this many distinct values: 'tied' (classify)
TIED_SHARE = 0.5  # or one value shared by at least this share of the items


def _z(level: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(1 - (1 - level) / 2))


def _wilson_limits(x: int, n: int, z: float) -> tuple[float, float]:
    """The plain Wilson score limits for x successes in n trials (no modification; Newcombe's methods use these)."""
    p = x / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if x == 0 else max(0.0, float(centre - half))
    hi = 1.0 if x == n else min(1.0, float(centre + half))
    return lo, hi


def wilson_ci(successes: int, n: int, level: float = 0.95) -> Estimate:
    """The proportion successes / n with its interval: the Wilson score interval, with two rules at the edges.

    - Fewer than EXACT_BELOW (10) trials: the exact Clopper-Pearson interval. With under 10 trials one trial moves
      the proportion by more than 10 points, the normal approximation behind the score interval has the least to
      stand on, and Wilson's coverage dips to 83% near p = 0 or 1 at n = 5-9; Clopper-Pearson never covers less
      than the level (at the price of width, which such a cell deserves).
    - 10 trials or more, 1 <= successes <= x* (x* = 2 up to 50 trials, 3 above) and its mirror at n - x*..n - 1:
      Brown, Cai & DasGupta's (2001, Statistical Science 16:101) modification, the lower (upper) limit replaced by
      the exact Poisson limit chi2_(2x, alpha/2) / 2n when that is further out. Plain Wilson's lower limit at 1-3
      successes sits too high: at 24 trials and p = 0.02 it covers only 91.7% (two successes already exclude 0.02);
      with the modification 98.8%, and its minimum over p at n = 10-96 rises from 84-91% to 91-93%.

    At 0/n and n/n the interval has its one-sided width ([0, u] and [1 - u, 1], u = z^2 / (n + z^2) for Wilson):
    never zero width for finite n. n = 0: no estimate."""
    from scipy.stats import beta, chi2

    x, n = int(successes), int(n)
    if n < 0 or not 0 <= x <= max(n, 0):
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return Estimate(NAN, NAN, NAN, 0)
    alpha = 1 - level
    if n < EXACT_BELOW:
        lo = 0.0 if x == 0 else float(beta.ppf(alpha / 2, x, n - x + 1))
        hi = 1.0 if x == n else float(beta.ppf(1 - alpha / 2, x + 1, n - x))
        return Estimate(x / n, lo, hi, n)
    lo, hi = _wilson_limits(x, n, _z(level))
    edge = 2 if n <= 50 else 3
    if 1 <= x <= edge:
        lo = min(lo, float(chi2.ppf(alpha / 2, 2 * x)) / (2 * n))
    if n - edge <= x <= n - 1:
        hi = max(hi, 1 - float(chi2.ppf(alpha / 2, 2 * (n - x))) / (2 * n))
    return Estimate(x / n, lo, hi, n)


def _newcombe10(a: int, b: int, c: int, d: int, z: float) -> tuple[float, float]:
    """Newcombe's method 10 for the 2x2 paired table [[a, b], [c, d]] (rows: first measurement 1/0, columns: second
    1/0): the limits for p1 - p2 = (b - c) / n."""
    n = a + b + c + d
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = _wilson_limits(a + b, n, z)
    l2, u2 = _wilson_limits(a + c, n, z)
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    cross = a * d - b * c
    if margins == 0:
        phi = 0.0
    elif cross > n / 2:
        phi = (cross - n / 2) / np.sqrt(margins)
    elif cross >= 0:
        phi = 0.0
    else:
        phi = cross / np.sqrt(margins)
    dl1, du1, dl2, du2 = p1 - l1, u1 - p1, p2 - l2, u2 - p2
    delta = np.sqrt(max(dl1**2 - 2 * phi * dl1 * du2 + du2**2, 0.0))
    eps = np.sqrt(max(du1**2 - 2 * phi * du1 * dl2 + dl2**2, 0.0))
    theta = (b - c) / n
    return max(-1.0, float(theta - delta)), min(1.0, float(theta + eps))


def newcombe_paired_ci(b: int, c: int, n: int, level: float = 0.95, *, a: int | None = None) -> Estimate:
    """The difference p1 - p2 = (b - c) / n between two paired proportions (the same n items measured twice, e.g.
    correct before and after), with Newcombe's hybrid score interval for paired data: method 10 of Newcombe (1998),
    "Improved confidence intervals for the difference between binomial proportions based on paired data",
    Statistics in Medicine 17:2635-2650 (the square-and-add of the two marginal Wilson intervals, with the
    correlation phi of the table, its numerator ad - bc reduced by n/2 when above n/2 and set to 0 between 0 and
    n/2).

    b: items 1 at the first measurement and 0 at the second (e.g. lost by the attack); c: 0 then 1 (gained);
    a: 1 both times. Method 10 needs a, because the marginal Wilson intervals depend on p1 = (a + b) / n and
    p2 = (a + c) / n. a=None (only the per-item differences known): the union of the method-10 intervals over
    every a in 0..n - b - c, conservative where the split of the concordant items is unknown.

    Never zero width for finite n: with b = c = 0 the corrected phi stays below 1 and the interval is [-w, w'],
    w, w' > 0 (the uncorrected phi = 1 would give [0, 0] at a = d = n / 2)."""
    b, c, n = int(b), int(c), int(n)
    if min(b, c) < 0 or b + c > n:
        raise ValueError(f"need b, c >= 0 and b + c <= n, got b={b}, c={c}, n={n}")
    if n == 0:
        return Estimate(NAN, NAN, NAN, 0)
    z = _z(level)
    if a is not None:
        if not 0 <= a <= n - b - c:
            raise ValueError(f"need 0 <= a <= n - b - c, got a={a}")
        lo, hi = _newcombe10(int(a), b, c, n - b - c - int(a), z)
    else:
        limits = [_newcombe10(k, b, c, n - b - c - k, z) for k in range(n - b - c + 1)]
        lo, hi = min(v[0] for v in limits), max(v[1] for v in limits)
    return Estimate((b - c) / n, lo, hi, n)


def paired_counts(first: Floats, second: Floats) -> tuple[int, int, int, int]:
    """(a, b, c, d) of two matched 0/1 vectors: a = 1 and 1, b = 1 then 0, c = 0 then 1, d = 0 and 0."""
    x, y = np.asarray(first, float), np.asarray(second, float)
    if x.shape != y.shape:
        raise ValueError("paired samples must have the same length")
    if classify(x) != "binary" or classify(y) != "binary":
        raise ValueError("paired_counts needs 0/1 values")
    return (int(np.sum((x == 1) & (y == 1))), int(np.sum((x == 1) & (y == 0))),
            int(np.sum((x == 0) & (y == 1))), int(np.sum((x == 0) & (y == 0))))


def classify(values: Floats) -> str:
    """What kind of per-item values these are, for picking an interval: 'binary' (every value 0 or 1), 'tied'
    (few distinct values: at most TIED_DISTINCT of them, or one value shared by at least TIED_SHARE of the items,
    such as paired differences of 0/1 outcomes or 0-1 scores at the floor) or 'continuous'."""
    x = np.asarray(values, float).ravel()
    if x.size and np.all((x == 0) | (x == 1)):
        return "binary"
    if x.size:
        _, counts = np.unique(x, return_counts=True)
        if counts.size <= TIED_DISTINCT or counts.max() >= TIED_SHARE * x.size:
            return "tied"
    return "continuous"


def interval_for(values: Floats, other: Floats | None = None, *,
                 difference: bool | None = None, identical: bool = False, confidence: float = 0.95,
                 seed: int = SEED, n_resamples: int | None = None) -> Estimate:
    """The mean of per-item values with the interval that suits their kind: what a report calls per cell.

    - values and other (matched items): the paired difference mean(values - other). Both 0/1: Newcombe's paired
      interval from the 2x2 table (newcombe_paired_ci); otherwise paired_diff_ci (bootstrap-t, as before).
    - values alone, a level (difference False): 0/1 values get wilson_ci; anything else mean_ci (bootstrap-t).
    - values alone, paired differences (difference True; None: True when any value is negative): differences in
      {-1, 0, 1} (of 0/1 outcomes) get newcombe_paired_ci from their counts of +1 and -1, the concordant split
      unknown; anything else mean_ci (bootstrap-t, its percentile fallback for mostly tied values).

    identical=True: the caller declares the values (or the two vectors) identical by construction; the Estimate
    carries identical=True and prints "identical by construction" (see mean_ci). Below MIN_ITEMS items: the value
    and n, no interval, as everywhere in a report."""
    x = np.asarray(values, float).ravel()
    if other is not None:
        y = np.asarray(other, float).ravel()
        if x.shape != y.shape:
            raise ValueError("paired samples must have the same length")
        if identical or x.size < MIN_ITEMS or classify(x) != "binary" or classify(y) != "binary":
            return paired_diff_ci(x, y, identical=identical, confidence=confidence, seed=seed,
                                  n_resamples=n_resamples)
        a, b, c, _ = paired_counts(x, y)
        return newcombe_paired_ci(b, c, x.size, confidence, a=a)
    if difference is None:
        difference = bool(x.size and x.min() < 0)
    if identical or x.size < MIN_ITEMS:
        return mean_ci(x, identical=identical, confidence=confidence, seed=seed, n_resamples=n_resamples)
    if not difference and classify(x) == "binary":
        return wilson_ci(int(x.sum()), x.size, confidence)
    if difference and np.all(np.isin(x, (-1.0, 0.0, 1.0))):
        return newcombe_paired_ci(int(np.sum(x == 1)), int(np.sum(x == -1)), x.size, confidence)
    return mean_ci(x, bounds=value_range(x, difference=difference), identical=identical, confidence=confidence,
                   seed=seed, n_resamples=n_resamples)


def ratio_ci(after: Floats, before: Floats, *, seed: int = SEED, n_resamples: int | None = None,
             confidence: float = 0.95, valid: tuple[float, float] | None = RATIO_RANGE) -> Estimate:
    """Retention = mean(after) / mean(before), items resampled in pairs (percentile interval).

    Undefined where the denominator is not clearly away from 0 (its mean under 4 standard errors), where the
    interval would reach outside `valid` ([0, 10] for a retention; None: any), and below MIN_ITEMS items: a ratio over a denominator that resamples to
    ~0 has no useful interval."""
    n_resamples = n_resamples or RESAMPLING.bootstrap
    x, y = np.asarray(after, float), np.asarray(before, float)
    n = int(x.size)
    if n == 0:
        return Estimate(NAN, NAN, NAN, 0)
    if y.mean() <= 0 or (n > 1 and y.std(ddof=1) / np.sqrt(n) > RATIO_MAX_CV * y.mean()):
        return Estimate(NAN, NAN, NAN, n, undefined="before ≈ 0")
    value = float(x.mean() / y.mean())
    if n < MIN_ITEMS:
        return Estimate(value, NAN, NAN, n)
    idx = resample_indices(seed, n, n_resamples)
    ratios = x[idx].mean(axis=1) / np.maximum(y[idx].mean(axis=1), 1e-12)
    a = (1 - confidence) / 2
    lo, hi = (float(v) for v in np.quantile(ratios, [a, 1 - a]))
    if valid is not None and (lo < valid[0] or hi > valid[1]):
        return Estimate(value, NAN, NAN, n, undefined="unstable ratio (before too close to 0)")
    return Estimate(value, lo, hi, n)


def seeded_ratio_ci(after: Any, before: Floats, *, confidence: float = 0.95,
                    valid: tuple[float, float] | None = RATIO_RANGE) -> Estimate:
    """mean(after) / mean(before) where `after` is seeds x items (several training seeds) and `before` one value
    per item: the delta method on the two-way decomposition. With R the ratio, z = after - R before per seed and
    item has grand mean 0 and the ratio's standard error is se(mean z) / mean(before), se and degrees of freedom as
    in seeded_ci (seed part + item part, Satterthwaite); a t interval. The items-only ratio_ci resamples items and
    so ignores the seed spread: at seed sd = item sd it covered 50-78% (bench/experiments/calibration.py).
    One row: ratio_ci. Undefined as in ratio_ci."""
    from scipy.stats import t

    a, y = np.asarray(after, float), np.asarray(before, float)
    if a.ndim == 1 or a.shape[0] == 1:
        return ratio_ci(a.ravel(), y, confidence=confidence, valid=valid)
    s, n = a.shape
    if n == 0:
        return Estimate(NAN, NAN, NAN, 0)
    if y.mean() <= 0 or (n > 1 and y.std(ddof=1) / np.sqrt(n) > RATIO_MAX_CV * y.mean()):
        return Estimate(NAN, NAN, NAN, n, seeds=s, undefined="before ≈ 0")
    value = float(a.mean() / y.mean())
    if n < MIN_ITEMS:
        return Estimate(value, NAN, NAN, n, seeds=s)
    se, df = _seeded_se(a - value * y[None, :])
    half = float(t.ppf(1 - (1 - confidence) / 2, df)) * se / float(y.mean())
    lo, hi = value - half, value + half
    if valid is not None and (lo < valid[0] or hi > valid[1]):
        return Estimate(value, NAN, NAN, n, seeds=s, undefined="unstable ratio (before too close to 0)")
    return Estimate(value, lo, hi, n, seeds=s)


def paired_permutation_p(diffs: Floats, *, seed: int = SEED, n_resamples: int | None = None) -> float:
    """Two-sided sign-flip permutation p-value for mean(diffs) == 0 (paired items).

    Exact over all 2^n sign patterns when there are at most n_resamples of them, else n_resamples random patterns
    from a generator seeded with `seed`, counted with the +1 of a randomised test. This is the computation of
    scipy.stats.permutation_test(permutation_type="samples", vectorized=True, rng=default_rng(seed)) done here
    with numpy alone, so that it runs on every SciPy (`rng=` needs SciPy 1.15; on 1.11-1.14 that call raised):
    the same draws (one Generator.permuted call over an (n_resamples, n, 2) index array), the same memory layout
    for the means (so the same floating-point sums), the same tolerance for ties (100 machine epsilons relative to
    the observed mean). tests/test_stats_edges.py checks that the p-values are bit-identical to SciPy's."""
    n_resamples = n_resamples or RESAMPLING.permutations
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


def _seeded_se(d: np.ndarray) -> tuple[float, float]:
    """The standard error and degrees of freedom of a seeds x items grand mean: spread()'s two parts, or, where both
    are 0 while the cells still vary (seed-by-item interaction alone), the cells' own standard error (S*I - 1 df)."""
    sp = spread(d)
    if sp.se == 0 and np.any(d != d.flat[0]):
        return float(d.std(ddof=1)) / np.sqrt(d.size), float(d.size - 1)
    return sp.se, sp.df


def seeded_ci(matrix: Any, confidence: float = 0.95, *, identical: bool = False,
              bounds: tuple[float, float] | None = None) -> Estimate:
    """Grand mean over seeds (rows) x items (columns) with a two-way t interval; one row = items only.

    Every cell equal: as mean_ci (identical=True for "identical by construction", else no_spread_ci over the items,
    the range from `bounds` or value_range); never the zero-width [m, m]."""
    from scipy.stats import t

    d = np.asarray(matrix, float)
    if d.ndim == 1 or d.shape[0] == 1:
        return mean_ci(d.ravel(), confidence=confidence, identical=identical, bounds=bounds)
    s, i = d.shape
    m = float(d.mean())
    seed_sd = float(d.mean(axis=1).std(ddof=1))
    if identical:
        est = mean_ci(d.ravel(), identical=True)
        return Estimate(m, est.lo, est.hi, i, seeds=s, seed_sd=seed_sd, identical=True)
    if i < MIN_ITEMS:
        return Estimate(m, NAN, NAN, i, seeds=s, seed_sd=seed_sd)
    if np.all(d == d.flat[0]):
        est = no_spread_ci(m, i, bounds=value_range(d) if bounds is None else bounds, level=confidence)
        return Estimate(m, est.lo, est.hi, i, seeds=s, seed_sd=seed_sd, seed_share=0.0)
    sp = spread(d)
    se, df = _seeded_se(d)
    half = float(t.ppf(1 - (1 - confidence) / 2, df)) * se
    share = sp.var_seeds / (sp.var_seeds + sp.var_items) if sp.var_seeds + sp.var_items > 0 else 0.0
    return Estimate(m, m - half, m + half, i, seeds=s, seed_sd=seed_sd, seed_share=share)


def tested(values: Any, *, identical: bool = False, bounds: tuple[float, float] | None = None,
           concordant: int | None = None) -> Tested:
    """The mean of per-item values (a vector) or of per-seed, per-item values (a seeds x items matrix), tested
    against 0, with its minimum detectable effect at 80% power (q = p until the report's correction sets it).

    The values are paired differences: without spread their range is value_range(values, difference=True) unless
    `bounds` says otherwise; identical=True as in mean_ci. Differences of 0/1 outcomes (every value -1, 0 or 1,
    some not 0) get Newcombe's paired interval; `concordant` (items 1 before and after, when the caller knows it)
    makes it exact to the 2x2 table, else it is the widest over the possible tables."""
    from scipy.stats import t

    d = np.asarray(values, float)
    if bounds is None:
        bounds = value_range(d, difference=True)
    if d.ndim == 2 and d.shape[0] > 1:
        est = seeded_ci(d, identical=identical, bounds=bounds)
        se, df = _seeded_se(d)
        p = float(2 * t.sf(abs(est.value) / se, df)) if se > 0 else (1.0 if est.value == 0 else 0.0)
        detectable = mde(se, df) if d.shape[1] >= MIN_ITEMS else NAN
    else:
        x = d.ravel()
        if (not identical and x.size >= MIN_ITEMS and bounds != UNBOUNDED
                and bool(np.any(x != 0)) and bool(np.all(np.isin(x, (-1.0, 0.0, 1.0))))):
            # paired differences of 0/1 outcomes: Newcombe's interval from the discordant counts (the bootstrap's
            # percentile fallback covered 76-91% there); the sign-flip test on them is McNemar's exact test
            est = newcombe_paired_ci(int(np.sum(x == 1)), int(np.sum(x == -1)), x.size, a=concordant)
        else:
            est = mean_ci(x, identical=identical, bounds=bounds)
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


