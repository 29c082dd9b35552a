"""Refusal rates corrected for the classifier's measured errors (the Rogan-Gladen estimator).

A classifier that flags refusals with true-positive rate TPR and false-positive rate FPR turns a true refusal rate
pi into an observed flag rate q = pi * TPR + (1 - pi) * FPR. Inverting it,

    pi = (q - FPR) / (TPR - FPR)

the corrected rate. TPR and FPR are measured on hand-labelled answers (a1 of L1 true refusals flagged, a0 of L0
non-refusals flagged), so the estimate carries two sources of error: the sampling of the study's answers (k of n
flagged) and the sampling of the labelled set. The interval draws all three proportions from their Jeffreys
distributions (Beta(k + 1/2, n - k + 1/2), and the same for a1 of L1 and a0 of L0), recomputes the estimate, and takes
the 2.5% and 97.5% percentiles (clipped to [0, 1]). Unlike a binomial bootstrap around the observed share, these
draws do not collapse when every answer (or none) was flagged: 7 of 7 flagged still leaves the rate uncertain.

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
    # the raw rate lies outside [FPR, TPR], where no true rate in [0, 1] would produce it on average: the estimate is
    # clipped to 0 or 1, and the classifier's measured errors do not fit these answers well
    clipped: bool = False

    def fmt(self) -> str:
        if not self.identifiable:
            return (f"raw {self.raw:.3f} of {self.n}; corrected: not identifiable with this classifier "
                    f"(TPR − FPR ≥ {self.separation_lo:.2f} only)")
        clip = " (clipped: raw outside [FPR, TPR])" if self.clipped else ""
        return f"raw {self.raw:.3f} of {self.n}; corrected {self.value:.3f} [{self.lo:.3f}, {self.hi:.3f}]{clip}"


def corrected_rate(flagged: int, n: int, errors: ErrorRates, *, seed: int = SEED,
                   n_resamples: int = N_RESAMPLES, level: float = 0.95) -> CorrectedRate:
    """The refusal rate behind `flagged` of `n` answers flagged by a classifier with these measured errors."""
    if n <= 0 or errors.positives <= 0 or errors.negatives <= 0:
        raise ValueError("corrected_rate needs answers and labelled positives and negatives")
    rng = np.random.default_rng(seed)

    def jeffreys(k: int, total: int) -> np.ndarray:
        return rng.beta(k + 0.5, total - k + 0.5, n_resamples)

    q = jeffreys(flagged, n)
    tpr = jeffreys(errors.tp, errors.positives)
    fpr = jeffreys(errors.fp, errors.negatives)
    a = (1 - level) / 2
    separation_lo = float(np.quantile(tpr - fpr, a))
    raw = flagged / n
    if separation_lo < MIN_SEPARATION:
        return CorrectedRate(raw=raw, n=n, value=None, lo=None, hi=None, separation_lo=separation_lo,
                             identifiable=False)
    unclipped = (raw - errors.fpr) / (errors.tpr - errors.fpr)
    value = float(np.clip(unclipped, 0.0, 1.0))
    draws = np.clip((q - fpr) / np.maximum(tpr - fpr, 1e-12), 0.0, 1.0)
    lo, hi = (float(v) for v in np.quantile(draws, [a, 1 - a]))
    return CorrectedRate(raw=raw, n=n, value=value, lo=min(lo, value), hi=max(hi, value),
                         separation_lo=separation_lo, identifiable=True, clipped=not 0.0 <= unclipped <= 1.0)
