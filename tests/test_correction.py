"""Refusal rates corrected for the classifier's measured errors: planted rates recovered with calibrated intervals."""

from __future__ import annotations

import numpy as np
import pytest

from persist.correction import ErrorRates, corrected_rate


@pytest.mark.parametrize("pi,tpr,fpr,n,positives,negatives", [
    (0.3, 0.65, 0.10, 200, 100, 300),  # about the shipped read-out classifier's errors
    (0.6, 0.80, 0.05, 100, 60, 200),
    (0.02, 0.90, 0.05, 300, 100, 300),  # near the floor
])
def test_planted_rates_are_recovered_with_coverage_near_95(pi, tpr, fpr, n, positives, negatives):
    """1,000 simulated studies: answers flagged with the classifier's true errors, the errors themselves measured on
    a labelled set of the given size. The corrected interval must cover the planted rate 93-97% of the time."""
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(1000):
        k = rng.binomial(n, pi * tpr + (1 - pi) * fpr)
        errors = ErrorRates(rng.binomial(positives, tpr), positives, rng.binomial(negatives, fpr), negatives)
        c = corrected_rate(k, n, errors, seed=int(rng.integers(1 << 30)), n_resamples=2000)
        assert c.identifiable
        covered += c.lo <= pi <= c.hi
    assert 0.93 <= covered / 1000 <= 0.97


def test_the_raw_rate_is_biased_and_the_corrected_one_is_not():
    errors = ErrorRates(tp=65, positives=100, fp=30, negatives=300)  # TPR 0.65, FPR 0.10
    # a true rate of 0.30 shows as 0.30 * 0.65 + 0.70 * 0.10 = 0.265 flagged
    c = corrected_rate(53, 200, errors)
    assert c.raw == pytest.approx(0.265) and c.value == pytest.approx(0.30, abs=1e-9) and c.lo < 0.3 < c.hi


def test_a_classifier_that_barely_separates_gives_no_number():
    c = corrected_rate(40, 200, ErrorRates(tp=25, positives=50, fp=20, negatives=50))  # TPR 0.5, FPR 0.4
    assert not c.identifiable and c.value is None and "not identifiable" in c.fmt()
    perfect = corrected_rate(40, 200, ErrorRates(tp=50, positives=50, fp=0, negatives=50))
    assert perfect.value == pytest.approx(0.2) and perfect.identifiable


def test_none_flagged_still_leaves_the_rate_uncertain_and_a_rate_beyond_tpr_is_marked_clipped():
    """A binomial bootstrap around 0 of 7 flagged draws 0 every time and gives a zero-width interval; the Jeffreys
    draws keep the uncertainty of seven answers. 7 of 7 flagged by a classifier that flags 57% of refusals lies
    beyond what any true rate produces on average: the estimate is clipped to 1 and says so."""
    errors = ErrorRates(tp=107, positives=188, fp=9, negatives=89)  # the read-out on the held-out answers
    none = corrected_rate(0, 7, errors)
    assert none.value == 0.0 and none.lo == 0.0 and none.hi > 0.2 and none.clipped  # 0 lies below FPR 0.10
    every = corrected_rate(7, 7, errors)
    assert every.value == 1.0 and every.clipped and "clipped: raw outside [FPR, TPR]" in every.fmt()
    assert not corrected_rate(3, 7, errors).clipped
