"""Intervals at the edges (issue 29): proportions (Wilson, Newcombe), values without spread, the dispatcher that
picks an interval by data type, the sign-flip p-value without SciPy's `rng=`, and their coverage by simulation.

Each simulation is seeded, so a failure is real, not luck; each names the old behaviour it would have caught."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom, binomtest

from persist.stats import (
    EXACT_BELOW,
    MIN_ITEMS,
    UNBOUNDED,
    classify,
    fmt,
    interval_for,
    mean_ci,
    newcombe_paired_ci,
    no_spread_ci,
    paired_counts,
    paired_diff_ci,
    paired_permutation_p,
    seeded_ci,
    tested,
    value_range,
    wilson_ci,
)

Z2 = 1.959963984540054**2


# ---------------------------------------------------------------- Wilson / Clopper-Pearson


def test_wilson_matches_the_textbook_interval_away_from_the_edges():
    for x, n in ((12, 24), (7, 30), (40, 96), (5, 10), (45, 48)):
        ref = binomtest(x, n).proportion_ci(method="wilson")
        est = wilson_ci(x, n)
        assert est.value == x / n and est.n == n
        assert (est.lo, est.hi) == pytest.approx((ref.low, ref.high), abs=1e-12)


def test_wilson_is_clopper_pearson_below_ten_trials():
    for n in range(1, EXACT_BELOW):
        for x in range(n + 1):
            ref = binomtest(x, n).proportion_ci(method="exact")
            assert (wilson_ci(x, n).lo, wilson_ci(x, n).hi) == pytest.approx((ref.low, ref.high), abs=1e-9)


def test_wilson_at_zero_and_n_has_its_one_sided_width():
    # Wilson at 0/n is [0, z^2 / (n + z^2)] (n >= 10); at n/n its mirror image
    for n in (10, 24, 48, 96, 1000):
        assert (wilson_ci(0, n).lo, wilson_ci(0, n).hi) == pytest.approx((0.0, Z2 / (n + Z2)))
        assert (wilson_ci(n, n).lo, wilson_ci(n, n).hi) == pytest.approx((1 - Z2 / (n + Z2), 1.0))
    assert wilson_ci(0, 0).n == 0 and not wilson_ci(0, 0).has_interval
    with pytest.raises(ValueError):
        wilson_ci(5, 4)


def test_wilson_lower_limit_at_one_or_two_successes_uses_the_poisson_limit():
    """Brown, Cai & DasGupta's modification: plain Wilson's lower limit at 2 of 24 is 0.0231, which excludes p = 0.02
    whenever two items succeed; the exact Poisson limit chi2(0.025, 4) / 48 = 0.0101 does not."""
    plain = binomtest(2, 24).proportion_ci(method="wilson").low
    assert plain == pytest.approx(0.0231, abs=1e-4)
    assert wilson_ci(2, 24).lo == pytest.approx(0.48442 / 48, abs=1e-4)
    assert wilson_ci(2, 24).hi == pytest.approx(binomtest(2, 24).proportion_ci(method="wilson").high)
    assert wilson_ci(22, 24).hi == pytest.approx(1 - wilson_ci(2, 24).lo)  # mirrored at the top
    assert wilson_ci(3, 24).lo == pytest.approx(binomtest(3, 24).proportion_ci(method="wilson").low)  # x* = 2 here
    assert wilson_ci(3, 96).lo < binomtest(3, 96).proportion_ci(method="wilson").low  # x* = 3 above 50 trials


def test_proportion_intervals_never_have_zero_width():
    for n in range(1, 101):
        for x in range(n + 1):
            est = wilson_ci(x, n)
            assert 0.0 <= est.lo <= est.value <= est.hi <= 1.0 and est.hi > est.lo, (x, n)
    for n in range(1, 17):
        for b in range(n + 1):
            for c in range(n + 1 - b):
                unknown = newcombe_paired_ci(b, c, n)
                assert unknown.hi > unknown.lo, (b, c, n)
                for a in range(n + 1 - b - c):
                    est = newcombe_paired_ci(b, c, n, a=a)
                    assert -1.0 <= est.lo <= est.value <= est.hi <= 1.0 and est.hi > est.lo, (a, b, c, n)
                    assert unknown.lo <= est.lo and est.hi <= unknown.hi


# ---------------------------------------------------------------- Newcombe (paired)


def test_newcombe_method_10_by_hand_on_a_published_table():
    """Cavo et al. (2012), complete response before/after consolidation: a = 59 (yes, yes), b = 6 (yes, no),
    c = 16 (no, yes), d = 80; n = 161. By hand (Newcombe 1998, method 10):
      p1 = 65/161 = 0.40373, Wilson [0.33104, 0.48090];  p2 = 75/161 = 0.46584, Wilson [0.39048, 0.54279]
      phi = (ad - bc - n/2) / sqrt(65 * 96 * 75 * 86) = (4720 - 96 - 80.5) / 6344.1 = 0.71617   (ad - bc > n/2)
      delta = sqrt((p1 - l1)^2 - 2 phi (p1 - l1)(u2 - p2) + (u2 - p2)^2) = sqrt(0.07269^2 - 2 phi 0.07269 0.07695
              + 0.07695^2) = 0.05651
      eps   = sqrt((u1 - p1)^2 - 2 phi (u1 - p1)(p2 - l2) + (p2 - l2)^2) = sqrt(0.07718^2 - 2 phi 0.07718 0.07536
              + 0.07536^2) = 0.05749
      (b - c)/n = -0.06211 -> [-0.06211 - 0.05651, -0.06211 + 0.05749] = [-0.1186, -0.0046],
    the interval Fagerland, Lydersen & Laake print for this table with their Newcombe square-and-add function."""
    est = newcombe_paired_ci(6, 16, 161, a=59)
    assert est.value == pytest.approx(-0.0621, abs=5e-5)
    assert est.lo == pytest.approx(-0.1186, abs=5e-5) and est.hi == pytest.approx(-0.0046, abs=5e-5)
    assert est.n == 161
    # the same table through the dispatcher, from the items' 0/1 outcomes
    first = np.r_[np.ones(59), np.ones(6), np.zeros(16), np.zeros(80)]
    second = np.r_[np.ones(59), np.zeros(6), np.ones(16), np.zeros(80)]
    assert paired_counts(first, second) == (59, 6, 16, 80)
    via = interval_for(first, second)
    assert (via.value, via.lo, via.hi) == (est.value, est.lo, est.hi)


def test_newcombe_without_discordant_items_keeps_a_width():
    """b = c = 0 at a = d = 12: the uncorrected phi would be 1 and the interval [0, 0]; method 10's phi is
    (144 - 12) / 144 = 0.917, and the interval a proper [-w, w]."""
    est = newcombe_paired_ci(0, 0, 24, a=12)
    assert est.value == 0.0 and est.lo == -est.hi and 0.05 < est.hi < 0.1
    every = newcombe_paired_ci(0, 0, 24)  # split unknown: the union over a
    assert every.lo < est.lo and every.hi > est.hi and every.hi < 0.2
    assert newcombe_paired_ci(24, 0, 24).hi == 1.0 and newcombe_paired_ci(24, 0, 24).lo < 1.0


# ---------------------------------------------------------------- values without spread


def test_equal_values_no_longer_give_a_zero_width_interval():
    """Old behaviour: mean_ci returned [m, m] for every all-equal vector (e.g. no capability item changed)."""
    n = 24
    u = Z2 / (n + Z2)
    zeros = mean_ci([0.0] * n)
    assert (zeros.lo, zeros.hi) == pytest.approx((0.0, u))  # a 0/1 level at 0/n: Wilson's interval
    ones = mean_ci([1.0] * n)
    assert (ones.lo, ones.hi) == pytest.approx((1 - u, 1.0))
    mid = mean_ci([0.25] * n)
    assert (mid.lo, mid.hi) == pytest.approx((0.25 - 0.25 * u, 0.25 + 0.75 * u))
    drop = tested([0.0] * n)  # a paired difference: either sign
    assert (drop.lo, drop.hi) == pytest.approx((-u, u)) and drop.p == 1.0
    assert (paired_diff_ci([1.0] * n, [1.0] * n).lo, paired_diff_ci([1.0] * n, [1.0] * n).hi) == pytest.approx((-u, u))
    shifts = mean_ci([2.5] * n)  # unbounded values: no spread seen says nothing about the scale
    assert shifts.lo == -np.inf and shifts.hi == np.inf
    assert paired_diff_ci([3.0] * n, [3.0] * n).hi == np.inf and tested([-4.0] * n).lo == -np.inf
    assert mean_ci([0.0] * n, bounds=(-1.0, 1.0)).lo == pytest.approx(-u)
    assert mean_ci([0.0] * n, bounds=UNBOUNDED).hi == np.inf
    assert not mean_ci([0.0] * (MIN_ITEMS - 1)).has_interval


def test_identical_by_construction_is_a_marker_not_an_interval():
    est = mean_ci([0.0] * 24, identical=True)
    assert est.identical and est.lo == est.hi == est.value == 0.0
    assert est.fmt() == "0.000 (identical by construction)" and fmt(est, 2) == "0.00 (identical by construction)"
    assert tested([0.0] * 24, identical=True).identical
    assert interval_for([1.0] * 30, [1.0] * 30, identical=True).fmt() == "0.000 (identical by construction)"
    assert est.to_dict()["identical"] is True
    with pytest.raises(ValueError):
        mean_ci([0.0, 1.0, 0.0, 0.0, 0.0], identical=True)
    assert not mean_ci([0.0, 1.0, 0.0, 0.0, 0.0]).identical


def test_seeds_by_items_without_spread_keeps_a_width():
    """Old behaviour: a seeds x items matrix with no seed and no item variation gave half-width 0."""
    flat = seeded_ci(np.zeros((3, 24)))  # a level at 0: [0, u] as for 0/n
    assert flat.seeds == 3 and flat.lo == 0.0 < flat.hi == pytest.approx(Z2 / (24 + Z2))
    drop = tested(np.zeros((3, 24)))  # a difference: either sign
    assert drop.lo < 0 < drop.hi and drop.p == 1.0
    assert seeded_ci(np.zeros((3, 24)), identical=True).identical
    # seed and item means all equal, the cells not (interaction only): the cells' own standard error
    inter = np.tile([[1.0, -1.0], [-1.0, 1.0]], (1, 12))
    est = seeded_ci(inter)
    assert est.value == 0.0 and est.hi - est.lo > 0.5
    assert tested(inter).p == pytest.approx(1.0)


def test_no_spread_bound_for_bounded_values():
    assert value_range([0.0, 1.0]) == (0.0, 1.0) and value_range([0.0, 1.0], difference=True) == (-1.0, 1.0)
    assert value_range([-1.0, 0.5]) == (-1.0, 1.0) and value_range([0.0, 3.0]) == UNBOUNDED
    est = no_spread_ci(1.0, 48, bounds=(-1.0, 1.0))
    assert est.hi == 1.0 and est.lo == pytest.approx(1 - 2 * Z2 / (48 + Z2))
    with pytest.raises(ValueError):
        no_spread_ci(2.0, 48, bounds=(0.0, 1.0))


# ---------------------------------------------------------------- data types and the dispatcher


def test_classify_by_data_type():
    rng = np.random.default_rng(5)
    assert classify([0, 1, 1, 0, 1]) == "binary" and classify([1.0] * 9) == "binary"
    assert classify([0, -1, 0, 1, 0, 0]) == "tied"  # paired differences of 0/1 outcomes
    assert classify(np.r_[np.zeros(20), rng.uniform(size=10)]) == "tied"  # 0-1 scores mostly at the floor
    assert classify(rng.normal(size=30)) == "continuous"
    assert classify([]) == "continuous"


def test_interval_for_picks_the_interval_by_data_type():
    rng = np.random.default_rng(6)
    outcomes = (rng.random(40) < 0.3).astype(float)
    w = wilson_ci(int(outcomes.sum()), 40)
    assert interval_for(outcomes) == w  # a 0/1 level: Wilson
    before, after = (rng.random(40) < 0.7).astype(float), (rng.random(40) < 0.6).astype(float)
    a, b, c, _ = paired_counts(before, after)
    assert interval_for(before, after) == newcombe_paired_ci(b, c, 40, a=a)  # paired 0/1: Newcombe
    d = before - after
    assert interval_for(d) == newcombe_paired_ci(b, c, 40)  # differences only: the split unknown
    assert interval_for(np.abs(d), difference=True) == newcombe_paired_ci(b + c, 0, 40)
    shifts = rng.normal(-0.5, 1, 24)  # continuous: bootstrap-t, the same numbers as mean_ci
    assert interval_for(shifts) == mean_ci(shifts)
    scores = rng.uniform(size=(2, 24))
    assert interval_for(scores[0], scores[1]) == paired_diff_ci(scores[0], scores[1])
    assert not interval_for([1.0, 0.0, 1.0]).has_interval  # below MIN_ITEMS: value and n only
    assert interval_for([0.0] * 24, difference=True).lo < 0 < interval_for([0.0] * 24, difference=True).hi


def test_existing_intervals_unchanged_for_data_with_spread():
    """Numbers of the code before issue 29 (same seeds), to the last bit: reports on ordinary data do not move.
    (The p-values hold to the bit on SciPy 1.11 with numpy 1.26 as well: paired_permutation_p uses numpy alone.)"""
    rng = np.random.default_rng(21)
    e = mean_ci(rng.exponential(1.0, 24) - 1.0)
    assert (e.value, e.lo, e.hi) == (0.31364094652891267, -0.12427363234890726, 1.046415546084509)
    e = mean_ci(np.r_[np.zeros(40), -np.ones(6), np.ones(2)])
    assert (e.value, e.lo, e.hi) == (-0.08333333333333333, -0.2125902303281728, 0.023407284523054392)
    t = tested(rng.normal(0.3, 1, 30))
    assert (t.value, t.lo, t.hi, t.p) == (0.3901860550816157, 0.09037883770715166, 0.6991118023500662,
                                          0.016198380161983803)
    assert t.mde == pytest.approx(0.4430683149544444, rel=1e-8)  # scipy's t.ppf: last digits vary by version
    e = seeded_ci(rng.normal(0, 1, (3, 24)))
    assert (e.value, e.seed_share) == (-0.05764502549233858, 0.1992870779059799)
    assert (e.lo, e.hi) == pytest.approx((-0.2834507182551499, 0.1681606672704727), rel=1e-12)  # t.ppf, as above
    assert paired_permutation_p(rng.normal(0.2, 1, 40), seed=3) == 0.718928107189281


# ---------------------------------------------------------------- sign-flip p-value without SciPy's rng=


def test_permutation_p_is_bit_identical_to_scipy():
    """paired_permutation_p no longer calls scipy.stats.permutation_test (whose rng= raised on SciPy 1.11-1.14);
    it must give SciPy's p-values exactly: exact enumeration up to 13 items, seeded random flips above, ties.
    The reference runs on every SciPy the project allows: `rng=` from 1.15, `random_state=` (the same Generator,
    used the same way) before."""
    import inspect

    from scipy.stats import permutation_test

    seed_arg = "rng" if "rng" in inspect.signature(permutation_test).parameters else "random_state"

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
                               **{seed_arg: np.random.default_rng(seed)}).pvalue
        assert paired_permutation_p(d, seed=seed, n_resamples=resamples) == float(ref), (k, n, seed)


# ---------------------------------------------------------------- coverage by simulation


def paired_study(rng: np.random.Generator, n: int, lost: float, gained: float, base: float):
    """n items measured twice (0/1): an item is lost (1 -> 0) with probability `lost`, gained (0 -> 1) with
    `gained`, else unchanged at its first value (1 with probability `base`). True difference: lost - gained."""
    u = rng.random(n)
    first = (rng.random(n) < base).astype(float)
    first = np.where(u < lost, 1.0, np.where(u < lost + gained, 0.0, first))
    second = np.where(u < lost + gained, 1 - first, first)
    return first, second


@pytest.mark.parametrize(("n", "lost", "gained", "seed"), [(24, 0.06, 0.02, 31), (48, 0.08, 0.02, 32),
                                                           (96, 0.03, 0.01, 33)])
def test_newcombe_coverage_of_paired_0_1_differences(n, lost, gained, seed):
    """2,000 simulated studies of paired 0/1 outcomes, interval_for(first, second) as a report calls it.

    Old behaviour caught: the old path (mean_ci of the differences, its percentile fallback for tied values)
    covered 75.7%, 92.7% and 91.1% here (issue 29: 76.5%, 91.3%, 90.6%); at 24 items 13% of studies had no
    discordant item and got the zero-width [0, 0]. Measured with Newcombe (seeds as here): 99.45%, 95.35%, 96.0%
    (exact, summed over every table at base 0.5: 99.5%, 95.6%, 96.0%): method 10 is conservative at 24 items with
    few discordant ones. With only the differences (interval_for(first - second), the split of the concordant
    items unknown): 99.85%, 98.75%, 99.2%, about 1.3 times as wide."""
    rng = np.random.default_rng(seed)
    truth, runs, hits, width = lost - gained, 2000, 0, 0.0
    for _ in range(runs):
        est = interval_for(*paired_study(rng, n, lost, gained, 0.5))
        hits += est.lo <= truth <= est.hi
        width += (est.hi - est.lo) / runs
    coverage = hits / runs
    assert 0.93 <= coverage <= 0.997, coverage  # 0.997: not a trivially wide interval either
    assert width < {24: 0.3, 48: 0.2, 96: 0.1}[n], width


def test_wilson_coverage_at_24_48_96_items():
    """interval_for on n 0/1 outcomes (Wilson), 2,000 studies at each n and p, and the exact coverage by summing the
    binomial probabilities of the outcomes whose interval covers p.

    Old behaviour caught: mean_ci gave 0/1 values a bootstrap interval, [0, 0] whenever no item succeeded
    (61.6% of studies at n = 24, p = 0.02), so it covered p = 0.02 in at most 38% of them."""
    rng = np.random.default_rng(41)
    for n in (24, 48, 96):
        for p in (0.02, 0.1, 0.5):
            exact = sum(binom.pmf(x, n, p) for x in range(n + 1)
                        if wilson_ci(x, n).lo <= p <= wilson_ci(x, n).hi)
            hits = 0
            for _ in range(2000):
                est = interval_for((rng.random(n) < p).astype(float))
                hits += est.lo <= p <= est.hi
            assert exact >= 0.925, (n, p, exact)  # lowest: 92.9% at n = 48, p = 0.02 (plain Wilson there too)
            assert abs(hits / 2000 - exact) < 0.015, (n, p, hits / 2000, exact)


def test_retention_at_the_floor_or_ceiling_is_named_not_a_ratio():
    """A clean score tight at the floor (0.02) made the retention ratio read ~4 with a tight interval; at the floor
    or the ceiling the report says so instead."""
    from persist.report.compare import compare
    from tests.test_worst_case import rec

    def rows(before: float, after: float) -> dict:
        records = []
        for i in range(40):
            wobble = 0.01 * (i % 3)
            records += [rec("model", "clean", f"t{i}", before + wobble, 0.0),
                        rec("model", "attack:x", f"t{i}", after + wobble, 0.0)]
        return {r.condition.label: r.overall for r in compare(records).rows}

    floor = rows(0.01, 0.07)["attack:x"]
    assert floor.retention.undefined == "at floor" and "at floor" in floor.retention.fmt()
    assert rows(0.97, 0.90)["attack:x"].retention.undefined == "at ceiling"
    middle = rows(0.50, 0.40)["attack:x"].retention
    assert middle.undefined is None and middle.lo < middle.value < middle.hi


def test_the_effect_that_matters_is_in_nats_for_the_log_odds_and_the_underpowered_flag_fires():
    """The old default (0.13 on the 0-1 score, converted through the score's slope) came to 10-15 nats, so no
    log-odds difference was ever underpowered. The default is now 0.5 nats, and a difference that can only detect
    ~1.5 nats is flagged; one that can detect 0.3 nats is not."""
    from persist.report.compare import compare
    from persist.report.model import EFFECT_NATS, Effect
    from tests.test_worst_case import rec

    def records(spread: float) -> list:
        out = []
        for role, sign in (("model", 1.0), ("baseline", -1.0)):
            for i in range(24):
                wobble = spread * np.sin(1.3 * i + (0 if role == "model" else 0.7))
                out += [rec(role, "clean", f"t{i}", 0.6, 1.0 + 0.1 * i),
                        rec(role, "attack:x", f"t{i}", 0.6, 1.0 + 0.1 * i - 0.2 + sign * 0.1 + wobble)]
        return out

    cmp = compare(records(2.0))
    [d] = cmp.differences
    assert cmp.effect.logodds == EFFECT_NATS == 0.5
    assert d.shift.mde > 0.5 and cmp.effect.underpowered(d.shift, True)
    assert not Effect(logodds=5.0).underpowered(d.shift, True)
    tight = compare(records(0.1))
    assert tight.differences[0].shift.mde < 0.5 and not tight.effect.underpowered(tight.differences[0].shift, True)


def test_a_verdict_is_called_only_when_the_adjusted_test_and_the_interval_agree():
    """The headline used to read the verdict from the unadjusted interval alone: an interval above 0 with q = 0.2
    was called "the model kept more". Now the BH-adjusted test must say so too, and a disagreement is named."""
    from persist.report.study import called
    from persist.stats import Tested

    assert called(Tested(0.8, 0.1, 1.5, 24, p=0.01, q=0.2)).startswith("no difference called")
    assert called(Tested(0.8, 0.1, 1.5, 24, p=0.001, q=0.01)) == "the model kept more of its alignment"
    assert called(Tested(-0.8, -1.5, -0.1, 24, p=0.001, q=0.01)) == "the baseline kept more of its alignment"
    assert "disagree" in called(Tested(0.8, -0.1, 1.5, 24, p=0.001, q=0.01))
    assert called(Tested(0.1, -0.5, 0.7, 24, p=0.6, q=0.8)) == "no reliable difference between the models"


def test_the_tail_rate_counts_items_that_crossed_to_misaligned_with_an_interval():
    """Beside the mean shift: of the items aligned before (log-odds > 0), the share misaligned after."""
    from persist.report.compare import compare
    from tests.test_worst_case import rec

    records = []
    for i in range(24):
        before = 1.0 if i < 20 else -1.0  # 20 items aligned before, 4 not
        after = -0.5 if i < 5 else before - 0.2  # 5 of the 20 cross; the 4 stay misaligned
        records += [rec("model", "clean", f"t{i}", 0.6, before), rec("model", "attack:x", f"t{i}", 0.5, after)]
    [row] = [r for r in compare(records).rows if r.condition.label == "attack:x"]
    crossed = row.overall.shift.crossed
    assert (crossed.value, crossed.n) == (0.25, 20) and crossed.lo < 0.25 < crossed.hi and crossed.lo > 0


def test_the_worst_case_names_what_it_is_a_minimum_over_and_gives_the_controls_minimum():
    """The worst-case table was titled "over all non-control attacks" while it took the minimum over every
    condition, with no reference. It now lists its conditions and carries the same minimum over the controls."""
    from persist.conditions import Condition
    from persist.report.compare import compare
    from persist.report.markdown import comparison_markdown
    from tests.test_worst_case import rec

    records = []
    for i in range(20):
        records += [rec("model", "clean", f"t{i}", 0.8), rec("model", "attack:x", f"t{i}", 0.7 - 0.01 * i),
                    rec("model", "finetune:bad-medical@8", f"t{i}", 0.4 + 0.01 * (i % 4)),
                    rec("model", "attack:c", f"t{i}", 0.75), rec("model", "attack:d", f"t{i}", 0.78)]
    controls = [Condition.parse("attack:c"), Condition.parse("attack:d")]
    cmp = compare(records, controls=controls)
    w = cmp.worst_case["model"]
    assert [c.label for c in w.over] == ["attack:x", "finetune:bad-medical@8"]
    assert w.reference is not None and [c.label for c in w.reference.over] == ["attack:c", "attack:d"]
    assert w.reference.worst.value == pytest.approx(0.75) and w.worst.value < 0.5
    text = comparison_markdown("t", {"model": "m"}, "traits", 20, "likelihood", cmp.rows, cmp)
    assert "| model: controls | 2 conditions: c, d |" in text
