"""Worst-of-N attacks against a spread-matched directionless control: calibrated under no direction, and a planted
direction is found. The raw worst-of-N minus a narrower control is not calibrated (the reason for the change)."""

from __future__ import annotations

import numpy as np
import pytest

from persist.conditions import Condition
from persist.report.items import ItemMeta, ItemValue
from persist.report.selection import spread_matched

META = ItemMeta(trait="honesty", domain="health", suite="traits")
BON = Condition.parse("attack:best-of-n")


def study(rng: np.random.Generator, n_items: int, tries: int, direction: float, spread: float):
    """Clean log-odds per item; each try = clean + direction + noise (sd `spread`, item-level noise too)."""
    clean = rng.normal(1.0, 2.0, n_items)
    before, after = {}, {}
    for i in range(n_items):
        draws = clean[i] + direction + rng.normal(0, spread, tries)
        mean = ItemValue(score=float(np.mean(draws > 0)), logodds=float(draws.mean()), per_100b=None, meta=META)
        before[f"t{i}"] = ItemValue(score=float(clean[i] > 0), logodds=float(clean[i]), per_100b=None, meta=META)
        after[f"t{i}"] = ItemValue(score=float(draws.min() > 0), logodds=float(draws.min()), per_100b=None,
                                   meta=META, tries=mean)
    return before, {0: after}


def test_a_directionless_worst_of_n_is_not_called_an_effect():
    """1,000 studies of 24 items, 8 tries each with spread 2 nats and no direction: attack minus the spread-matched
    null covers 0 in 93-97% of them. (The raw worst of 8 sits ~2.8 nats below clean in every one.)"""
    rng = np.random.default_rng(3)
    covered, raw = 0, []
    for _ in range(1000):
        before, after = study(rng, 24, 8, 0.0, 2.0)
        vs = spread_matched(before, after, BON)
        assert vs is not None and vs.shift is not None
        covered += vs.shift.lo <= 0 <= vs.shift.hi
        raw.append(np.mean([after[0][i].logodds - before[i].logodds for i in before]))
    assert 0.93 <= covered / 1000 <= 0.97
    assert np.mean(raw) < -2.0  # the selection alone, which the null removes


def test_a_planted_direction_is_detected():
    rng = np.random.default_rng(4)
    found = 0
    for _ in range(200):
        before, after = study(rng, 24, 8, -1.5, 2.0)
        vs = spread_matched(before, after, BON)
        assert vs is not None and vs.shift is not None
        found += vs.shift.hi < 0
        assert vs.shift.value == pytest.approx(np.mean([after[0][i].tries.logodds - before[i].logodds
                                                        for i in before]))
    assert found / 200 > 0.9


def test_compare_reports_best_of_n_against_its_spread_matched_null():
    from persist.report.compare import compare
    from tests.test_worst_case import rec

    records = []
    for i in range(20):
        records.append(rec("model", "clean", f"t{i}", 0.7, 1.0))
        for k in range(4):  # tries with no direction: -1, +1, -0.5, +0.5 around clean
            r = rec("model", "attack:best-of-n", f"t{i}", 0.7, 1.0 + (-1, 1, -0.5, 0.5)[k] + 0.01 * (i % 3))
            records.append(r.__class__(**{**r.__dict__, "key": f"{r.key}/{k}", "attack_index": k}))
    cmp = compare(records, worst_of=[BON])
    [row] = [r for r in cmp.rows if r.condition == BON]
    assert row.overall.shift.shift.value == pytest.approx(-1.0 + 0.01 * np.mean([i % 3 for i in range(20)]))
    assert row.vs_control is not None and "spread-matched null" in row.vs_control.control.label
    assert row.vs_control.shift.value == pytest.approx(0.01 * np.mean([i % 3 for i in range(20)]))


def pair_study(rng: np.random.Generator, n_train: int, n_heldout: int, turns: int, direction: float,
               spread: float) -> tuple[np.ndarray, np.ndarray]:
    """PAIR and its paraphrase control on simulated items: per turn, each rewrite's log-odds = clean + the arm's
    direction + noise (sd `spread`). Each arm chooses its turn on the train items (persist.attacks.pair.choose_turn)
    and reports the held-out items at that turn. Returns (attack - control per held-out item, the per-item minimum
    over turns minus clean on the held-out items: what the attack reported before it had a control)."""
    from persist.attacks.pair import choose_turn

    clean = rng.normal(1.0, 2.0, n_train + n_heldout)
    ids = [f"t{i}" for i in range(n_train + n_heldout)]
    train = ids[:n_train]
    arms = []
    for d in (direction, 0.0):
        values = clean[None, :] + d + rng.normal(0, spread, (turns, len(ids)))
        per_turn = [{i: ("", float(values[t, k])) for k, i in enumerate(ids)} for t in range(turns)]
        turn, _ = choose_turn(per_turn, train)
        arms.append((values[turn, n_train:], values[:, n_train:].min(axis=0)))
    return arms[0][0] - arms[1][0], arms[0][1] - clean[n_train:]


def test_a_directionless_pair_minus_its_control_covers_zero():
    """1,000 studies (24 train + 24 held-out items, 3 turns, spread 1.5 nats, no direction in either arm): the
    interval of attack minus control on the held-out items covers 0 in 93-97%. The old report, the per-item best
    of 3 on the scores that chose it, sat ~1.3 nats below clean under pure noise."""
    from persist.stats import UNBOUNDED, tested

    rng = np.random.default_rng(5)
    covered, raw = 0, []
    for _ in range(1000):
        diff, worst = pair_study(rng, 24, 24, 3, 0.0, 1.5)
        t = tested(diff, bounds=UNBOUNDED)
        covered += t.lo <= 0 <= t.hi
        raw.append(worst.mean())
    assert 0.93 <= covered / 1000 <= 0.97
    assert np.mean(raw) < -1.0


def test_a_planted_pair_direction_is_detected():
    from persist.stats import UNBOUNDED, tested

    rng = np.random.default_rng(6)
    found = sum(tested(pair_study(rng, 24, 24, 3, -2.0, 1.5)[0], bounds=UNBOUNDED).hi < 0 for _ in range(200))
    assert found / 200 > 0.9
