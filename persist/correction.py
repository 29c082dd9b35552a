"""Refusal rates corrected for the classifier's measured errors (the Rogan-Gladen estimator).

A classifier that flags refusals with true-positive rate TPR and false-positive rate FPR turns a true refusal rate
pi into an observed flag rate q = pi * TPR + (1 - pi) * FPR. Inverting it,

    pi = (q - FPR) / (TPR - FPR)

the corrected rate. TPR and FPR are measured on hand-labelled answers (a1 of L1 true refusals flagged, a0 of L0
non-refusals flagged), so the estimate carries two sources of error: the sampling of the study's answers (k of n
flagged) and the sampling of the labelled set. The interval is a parametric bootstrap over both: k*, a1*, a0* drawn
from their binomials, the estimate recomputed, the 2.5% and 97.5% percentiles taken (clipped to [0, 1]).

When the classifier barely separates the classes (TPR - FPR near 0), the inversion divides by almost nothing and no
number means anything: when the lower 95% bound of TPR - FPR (same bootstrap) is below MIN_SEPARATION (0.2), the
rate is "not identifiable with this classifier" and no estimate is given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_SEPARATION = 0.2  # the lower 95% bound of TPR - FPR below which a corrected rate is not identifiable
N_RESAMPLES = 4000
SEED = 20261207


@dataclass(frozen=True)
class ErrorRates:
    """A classifier's errors measured on labelled answers: `tp` of `positives` true refusals flagged, `fp` of
    `negatives` non-refusals flagged."""

    tp: int
    positives: int
    fp: int
    negatives: int

    @property
    def tpr(self) -> float:
        return self.tp / self.positives

    @property
    def fpr(self) -> float:
        return self.fp / self.negatives


@dataclass(frozen=True)
class CorrectedRate:
    """A raw flag rate and the rate corrected for the classifier's errors (None when not identifiable)."""

    raw: float
    n: int
    value: float | None
    lo: float | None
    hi: float | None
    separation_lo: float  # lower 95% bound of TPR - FPR
    identifiable: bool

    def fmt(self) -> str:
        if not self.identifiable:
            return (f"raw {self.raw:.3f} of {self.n}; corrected: not identifiable with this classifier "
                    f"(TPR − FPR ≥ {self.separation_lo:.2f} only)")
        return f"raw {self.raw:.3f} of {self.n}; corrected {self.value:.3f} [{self.lo:.3f}, {self.hi:.3f}]"


def corrected_rate(flagged: int, n: int, errors: ErrorRates, *, seed: int = SEED,
                   n_resamples: int = N_RESAMPLES, level: float = 0.95) -> CorrectedRate:
    """The refusal rate behind `flagged` of `n` answers flagged by a classifier with these measured errors."""
    if n <= 0 or errors.positives <= 0 or errors.negatives <= 0:
        raise ValueError("corrected_rate needs answers and labelled positives and negatives")
    rng = np.random.default_rng(seed)
    q = rng.binomial(n, flagged / n, n_resamples) / n
    tpr = rng.binomial(errors.positives, errors.tpr, n_resamples) / errors.positives
    fpr = rng.binomial(errors.negatives, errors.fpr, n_resamples) / errors.negatives
    a = (1 - level) / 2
    separation_lo = float(np.quantile(tpr - fpr, a))
    raw = flagged / n
    if separation_lo < MIN_SEPARATION:
        return CorrectedRate(raw=raw, n=n, value=None, lo=None, hi=None, separation_lo=separation_lo,
                             identifiable=False)
    value = float(np.clip((raw - errors.fpr) / (errors.tpr - errors.fpr), 0.0, 1.0))
    draws = np.clip((q - fpr) / np.maximum(tpr - fpr, 1e-12), 0.0, 1.0)
    lo, hi = (float(v) for v in np.quantile(draws, [a, 1 - a]))
    return CorrectedRate(raw=raw, n=n, value=value, lo=min(lo, value), hi=max(hi, value),
                         separation_lo=separation_lo, identifiable=True)
