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
