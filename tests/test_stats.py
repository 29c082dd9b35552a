"""Statistics against known cases."""

from __future__ import annotations

import numpy as np
import pytest

from persist.stats import benjamini_hochberg, mean_ci, paired_diff_ci, paired_permutation_p, ratio_ci


def test_mean_ci_matches_normal_theory_on_large_sample():
    rng = np.random.default_rng(3)
    x = rng.normal(0.6, 0.2, 2000)
    est = mean_ci(x)
    se = x.std(ddof=1) / np.sqrt(x.size)
    assert est.value == pytest.approx(x.mean())
    assert est.lo == pytest.approx(x.mean() - 1.96 * se, abs=0.25 * se)
    assert est.hi == pytest.approx(x.mean() + 1.96 * se, abs=0.25 * se)
    assert est.n == 2000


def test_bootstrap_interval_covers_true_difference_in_simulation():
    """Coverage of the paired-difference interval over 60 simulated studies is near 95%."""
    rng = np.random.default_rng(0)
    covered = 0
    for s in range(60):
        before = rng.uniform(0.3, 0.9, 80)
        after = before - 0.1 + rng.normal(0, 0.1, 80)
        est = paired_diff_ci(before, after, seed=s, n_resamples=1000)
        covered += est.lo <= 0.1 <= est.hi
    assert covered >= 52  # 95% nominal; binomial(60, .95) is >= 53 with prob ~0.9


def test_degenerate_inputs():
    assert mean_ci([]).n == 0
    one = mean_ci([0.4])
    assert (one.value, one.lo, one.hi, one.n) == (0.4, 0.4, 0.4, 1)
    r = ratio_ci([0.5, 0.5], [1.0, 1.0])
    assert r.value == 0.5 and r.lo == 0.5


def test_ratio_ci_contains_point():
    rng = np.random.default_rng(1)
    b = rng.uniform(0.5, 1, 50)
    a = b * 0.7
    est = ratio_ci(a, b)
    assert est.value == pytest.approx(0.7)
    assert est.lo <= 0.7 <= est.hi


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
