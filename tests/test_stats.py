"""Statistics against known cases, and the intervals' calibration by simulation (docs/statistics.md)."""

from __future__ import annotations

import numpy as np
import pytest

from persist.stats import (
    MIN_ITEMS,
    benjamini_hochberg,
    mde,
    mean_ci,
    paired_diff_ci,
    paired_permutation_p,
    power_at,
    ratio_ci,
    seeded_ci,
    tested,
)


def test_mean_ci_matches_normal_theory_on_large_sample():
    rng = np.random.default_rng(3)
    x = rng.normal(0.6, 0.2, 2000)
    est = mean_ci(x)
    se = x.std(ddof=1) / np.sqrt(x.size)
    assert est.value == pytest.approx(x.mean())
    assert est.lo == pytest.approx(x.mean() - 1.96 * se, abs=0.25 * se)
    assert est.hi == pytest.approx(x.mean() + 1.96 * se, abs=0.25 * se)
    assert est.n == 2000


def test_cells_under_five_items_get_no_interval():
    assert mean_ci([]).n == 0
    few = mean_ci([0.4, 0.5, 0.9])
    assert few.value == pytest.approx(0.6) and few.n == 3 and not few.has_interval
    assert few.fmt() == "0.600 (n=3, too few for an interval)"
    assert mean_ci([0.4] * MIN_ITEMS).has_interval
    assert not tested([1.0, 2.0]).has_interval and tested([1.0, 2.0]).mde != tested([1.0, 2.0]).mde  # nan


def test_retention_only_where_the_denominator_is_away_from_zero():
    rng = np.random.default_rng(1)
    b = rng.uniform(0.5, 1, 50)
    est = ratio_ci(b * 0.7, b)
    assert est.value == pytest.approx(0.7) and est.lo <= 0.7 <= est.hi
    # before mostly ~0 (a floor): the ratio resamples towards 0/0 and is reported undefined, not [0, 35839]
    b = np.r_[np.full(22, 1e-4), [0.3, 0.02]]
    undefined = ratio_ci(b * 3, b)
    assert undefined.undefined == "before ≈ 0" and undefined.fmt() == "undefined: before ≈ 0"
    # and never an interval outside [0, 10]
    b = rng.uniform(0.05, 0.15, 8)
    assert ratio_ci(b * 12, b).undefined or ratio_ci(b * 12, b).hi <= 10


def test_permutation_p_known_cases():
    # All 6 differences positive: exact sign-flip p = 2 / 2^6 = 0.03125.
    assert paired_permutation_p([1, 2, 3, 4, 5, 6]) == pytest.approx(2 / 64, abs=1e-9)
    assert paired_permutation_p([0, 0, 0]) == 1.0
    assert paired_permutation_p([1, -1, 1, -1]) == pytest.approx(1.0)


def test_benjamini_hochberg_by_hand():
    q = benjamini_hochberg([0.01, 0.04, 0.03, 0.2])
    # sorted p: .01 .03 .04 .2 -> p*n/rank: .04 .04 .0533 .2 -> cumulative min from the top
    assert q == pytest.approx([0.04, 0.05333333, 0.05333333, 0.2])
    assert benjamini_hochberg([]) == []


def test_mde_and_power_agree():
    """At the MDE the analytic power is 80%, by construction of both."""
    se, df = 0.1, 23
    assert power_at(mde(se, df), se, df) == pytest.approx(0.8, abs=0.01)
    assert power_at(0.0, se, df) == pytest.approx(0.05, abs=1e-6)


def test_seeds_by_items_decomposes_the_spread():
    rng = np.random.default_rng(4)
    d = rng.normal(0, 0.1, (3, 40)) + np.array([[-1.0], [0.0], [1.0]])  # the seeds differ a lot
    est = seeded_ci(d)
    assert est.seeds == 3 and est.n == 40 and est.dominant == "seeds" and est.seed_share > 0.9
    assert est.seed_sd == pytest.approx(1.0, abs=0.05)
    assert est.hi - est.lo > 4  # t with ~2 degrees of freedom: wide, as 3 seeds this far apart deserve
    d = rng.normal(0, 1.0, (3, 40)) + rng.normal(0, 1, 40)  # the items differ, the seeds do not
    assert seeded_ci(d).dominant == "items"
    assert seeded_ci(d[:1]).seeds == 1  # one seed: items only


# ---------------------------------------------------------------- calibration by simulation


def null_rate(draw, ci, runs: int) -> float:
    return float(np.mean([not (e.lo <= 0 <= e.hi) for e in (ci(draw(k)) for k in range(runs))]))


def test_null_false_positive_rate_items_only():
    """The baseline against itself: 95% intervals exclude 0 in 5% +- 2.5% of 400 null studies (24 items; drops
    with item effects that cancel, skewed noise as 0-1 scores have)."""
    rng = np.random.default_rng(11)

    def draw(_k: int) -> np.ndarray:
        item = rng.beta(0.7, 1.6, 24)
        return (item + rng.normal(0, 0.1, 24)) - (item + rng.normal(0, 0.1, 24))

    rate = null_rate(draw, mean_ci, 400)
    assert 0.025 <= rate <= 0.075, rate


def test_null_false_positive_rate_seeds_by_items():
    """Three training seeds per model, seed effects as large as the item noise: 5% +- 2.5% of 400 null studies."""
    rng = np.random.default_rng(12)

    def draw(_k: int) -> np.ndarray:
        return rng.normal(0, 0.5, (3, 1)) + rng.normal(0, 1, (1, 24)) + rng.normal(0, 1, (3, 24))

    rate = null_rate(draw, seeded_ci, 400)
    assert 0.025 <= rate <= 0.075, rate


def test_coverage_of_a_known_effect():
    """A synthetic shift of 0.3 injected into skewed per-item values: covered in 95% +- 2% of 1000 studies."""
    rng = np.random.default_rng(13)
    hits = 0
    for _ in range(1000):
        x = 0.3 + rng.exponential(1.0, 24) - 1.0
        est = mean_ci(x)
        hits += est.lo <= 0.3 <= est.hi
    assert 0.93 <= hits / 1000 <= 0.97, hits


def test_power_against_the_analytic_value():
    """Detection rate of a true difference (interval excludes 0) within 5 points of the noncentral-t power."""
    rng = np.random.default_rng(14)
    n, sigma, effect = 24, 1.0, 0.45
    detected = np.mean([not (e.lo <= 0 <= e.hi) for e in (mean_ci(effect + rng.normal(0, sigma, n))
                                                          for _ in range(1000))])
    analytic = power_at(effect, sigma / np.sqrt(n), n - 1)
    assert 0.4 < analytic < 0.8  # a power worth testing
    assert abs(detected - analytic) <= 0.05, (detected, analytic)


def test_paired_difference_interval_is_the_mean_of_differences():
    rng = np.random.default_rng(0)
    before = rng.uniform(0.3, 0.9, 80)
    after = before - 0.1 + rng.normal(0, 0.1, 80)
    a, b = paired_diff_ci(before, after), mean_ci(before - after)
    assert (a.value, a.lo, a.hi) == (b.value, b.lo, b.hi)


def test_interval_stays_within_the_observed_range():
    """Bootstrap-t on five 0-1 scores with ties can run far outside [0, 1]; the interval is kept in the data's range."""
    est = mean_ci([0.0, 0.0, 0.0, 1.0, 0.02])
    assert 0.0 <= est.lo <= est.value <= est.hi <= 1.0


def test_mostly_tied_values_get_a_sane_interval():
    """47 unchanged answers and one lost: bootstrap-t divides by resamples without spread; the percentile interval of
    the resampled means is used instead, and it is narrow."""
    est = mean_ci([0.0] * 47 + [-1.0])
    assert est.hi == 0.0 and -0.1 < est.lo < 0.0
