"""Edge cases of persist.stats (issue 29): the sign-flip p-value without SciPy's `rng=`."""

from __future__ import annotations

import numpy as np
import pytest
import scipy

from persist.stats import paired_permutation_p, tested

# ---------------------------------------------------------------- sign-flip p-value without SciPy's rng=


@pytest.mark.skipif(tuple(int(v) for v in scipy.__version__.split(".")[:2]) < (1, 15),
                    reason="scipy.stats.permutation_test(rng=...) needs SciPy 1.15")
def test_permutation_p_is_bit_identical_to_scipy():
    """paired_permutation_p no longer calls scipy.stats.permutation_test (whose rng= raised on SciPy 1.11-1.14);
    it must give SciPy's p-values exactly: exact enumeration up to 13 items, seeded random flips above, ties."""
    from scipy.stats import permutation_test

    rng = np.random.default_rng(8)
    for k in range(120):
        n = int(rng.integers(2, 60))
        kind = k % 4
        d = (rng.normal(0.3, 1, n) if kind == 0 else rng.integers(-1, 2, n).astype(float) if kind == 1 else
             np.round(rng.exponential(1, n) - 0.7, 1) if kind == 2 else rng.standard_t(3, n))
        if np.all(d == 0):
            continue
        seed, resamples = int(rng.integers(0, 100)), int(rng.choice([1000, 10000]))
        ref = permutation_test((d,), lambda x, axis: x.mean(axis=axis), permutation_type="samples",
                               n_resamples=resamples, alternative="two-sided", vectorized=True,
                               rng=np.random.default_rng(seed)).pvalue
        assert paired_permutation_p(d, seed=seed, n_resamples=resamples) == float(ref), (k, n, seed)


def test_permutation_p_unchanged():
    """p-values of the code that called scipy.stats.permutation_test, to the bit (also on SciPy 1.11, numpy 1.26)."""
    rng = np.random.default_rng(21)
    rng.exponential(1.0, 24)
    assert tested(rng.normal(0.3, 1, 30)).p == 0.016198380161983803
    rng.normal(0, 1, (3, 24))
    assert paired_permutation_p(rng.normal(0.2, 1, 40), seed=3) == 0.718928107189281
    assert paired_permutation_p([1, 2, 3, 4, 5, 6]) == 2 / 64
