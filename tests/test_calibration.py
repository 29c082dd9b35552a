"""The calibration harness (bench/experiments/calibration.py) on a few cells, and the defects it found in the report
path, each with a test that failed before its fix: intervals of paired 0/1 differences, and the `after` and
retention intervals that ignored the spread of training seeds. Seeded: a failure is real, not luck."""

from __future__ import annotations

import numpy as np
import pytest

from bench.experiments.calibration import Cell, run_cell, simulate, table
from persist.report.compare import compare
from persist.stats import mean_ci, ratio_ci, resampling, seeded_ci, seeded_ratio_ci


def test_simulated_records_go_through_the_report_path():
    cell = Cell(24, "continuous", 2, 1.0)
    records, _ = simulate(cell, 0)
    cmp = compare(records)
    labels = {r.condition.label for r in cmp.rows}
    assert labels == {"finetune:null@10", "finetune:planted@10", "attack:null"}
    assert {r.role for r in cmp.rows} == {"model", "baseline"} and len(cmp.differences) == 3
    planted = next(r for r in cmp.rows if r.role == "model" and r.condition.name == "planted")
    assert planted.overall.drop.seeds == 2 and planted.overall.shift is not None
    assert simulate(cell, 0)[0] == records and simulate(cell, 1)[0] != records  # seeded by cell and run


@pytest.mark.parametrize("n,lost,gained", [(24, 0.06, 0.02), (48, 0.08, 0.02), (96, 0.03, 0.01)])
def test_paired_0_1_drops_cover_in_the_report(n, lost, gained):
    """Capability and refusal rows: 0/1 outcomes per item, few flips (the issue's three scenarios). The drop's
    interval in the report was the bootstrap's percentile fallback, which covered 76.5%, 91.3% and 90.6% here; it
    is now Newcombe's paired interval from the item's 2x2 table."""
    from tests.test_worst_case import rec

    rng = np.random.default_rng(n)
    hits = []
    with resampling(bootstrap=199, permutations=199):
        for _ in range(600):
            before = (rng.uniform(size=n) < 0.6).astype(float)
            u = rng.uniform(size=n)
            after = np.where(before == 1, (u >= lost / 0.6), (u < gained / 0.4)).astype(float)
            records = [rec("model", cond, f"c{i}", float(v[i])) for cond, v in (("clean", before),
                                                                                ("attack:x", after))
                       for i in range(n)]
            drop = compare(records).rows[0].overall.drop
            hits.append(drop.lo <= lost - gained <= drop.hi)
    assert 0.93 <= np.mean(hits) <= 0.995, np.mean(hits)


def test_after_and_retention_carry_the_seed_spread():
    """With several training seeds the `after` mean and the retention ratio were intervals over items only (the
    seed means averaged away): at seed sd = item sd they covered 50-78%. Now two-way, as the drop's (5 seeds here:
    with 2-3 seeds every two-way interval undercovers when seeds vary as much as items, docs/statistics.md)."""
    rng = np.random.default_rng(7)
    hit_after, hit_ratio, old_ratio = [], [], []
    for _ in range(400):
        before = rng.uniform(0.3, 0.7, 24)
        seed = rng.normal(0, 0.08, 5)[:, None]
        item = rng.normal(0, 0.08, 24)[None, :]
        after = before[None, :] - 0.1 + seed + item + rng.normal(0, 0.02, (5, 24))
        truth_after = 0.5 - 0.1  # before ~ U(0.3, 0.7): mean 0.5; seed and item terms have mean 0
        est = seeded_ci(after, bounds=(0.0, 1.0))
        hit_after.append(est.lo <= truth_after <= est.hi)
        r = seeded_ratio_ci(after, before)
        hit_ratio.append(r.lo <= truth_after / 0.5 <= r.hi)
        o = ratio_ci(after.mean(axis=0), before, n_resamples=499)  # the old interval: seed means averaged away
        old_ratio.append(o.lo <= truth_after / 0.5 <= o.hi)
    assert np.mean(hit_after) >= 0.92 and np.mean(hit_ratio) >= 0.92
    assert np.mean(old_ratio) < 0.85  # the defect, still visible in the items-only interval


def test_one_seed_is_the_items_only_interval():
    """With one seed the new seeded intervals are exactly the old items-only ones (no report changes bytes)."""
    rng = np.random.default_rng(3)
    before, after = rng.uniform(0.3, 0.7, 30), rng.uniform(0.2, 0.6, 30)
    assert seeded_ci(after[None, :], bounds=(0.0, 1.0)) == mean_ci(after)
    assert seeded_ratio_ci(after[None, :], before) == ratio_ci(after, before)


def test_the_table_names_cells_outside_the_band():
    fake = {"cell": {"kind": "continuous"}, "name": "24 items, continuous, 2 seeds", "runs": 10,
            "coverage": {"drop (fine-tune)": 0.86, "shift (attack)": 0.95, "clean mean": 0.99},
            "coverage_n": {"drop (fine-tune)": 10, "shift (attack)": 10, "clean mean": 10},
            "null_p": {"drop (fine-tune)": {"below_05": 0.11, "ks_p": 1e-6, "distinct": 10}},
            "fdr": {"score": 0.2}, "power": {"model drop": 0.3, "difference of drops": 0.1}}
    text = table([fake], 10)
    assert "86.0% (drop (fine-tune)) **below**" in text and "99.0% (clean mean) **above**" in text
    assert "**non-uniform**" in text


@pytest.mark.parametrize("kind", ["continuous", "tied", "binary"])
def test_a_null_cell_keeps_its_false_discovery_rate(kind):
    """Every condition null but the planted one: BH's false discovery rate per family stays at or below 5% (one
    seed, 24 items: the cell the demo runs in)."""
    got = run_cell(Cell(24, kind, 1), runs=150, bootstrap=299, permutations=299)
    assert max(got["fdr"].values()) <= 0.08, got["fdr"]
