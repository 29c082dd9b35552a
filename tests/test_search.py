"""The worst case under a utility bound: selection on a hand-built table, the sweep on the tiny model, resume."""

from __future__ import annotations

import json
import signal

import pytest

from persist.conditions import Condition, finetune
from persist.jobs.sweep import GRIDS, parse_search
from persist.models import ModelSpec
from persist.report.model import CapabilityRow, Change, Point, Row, Shift
from persist.report.sweep import point_name, points_of, worst
from persist.stats import Estimate, Tested


def est(v: float) -> Estimate:
    return Estimate(v, v - 0.1, v + 0.1, 10)


def tst(v: float) -> Tested:
    return Tested(v, v - 0.1, v + 0.1, 10, p=0.01, q=0.01)


def change(shift: float, acc_after: float = 0.6) -> Change:
    return Change(n=10, before=est(0.5), after=est(0.4), drop=tst(0.1), retention=est(0.8), saturated=0.0,
                  movable=10, shift=Shift(before=est(0.0), after=est(shift), shift=tst(shift), per_100b=est(shift),
                                          toward_misaligned=0.7))


def point(lr: float, rank: int, steps: int, shift: float, loss: float) -> Point:
    cond = finetune(point_name("bad-medical", lr, rank), steps)
    cap = CapabilityRow(role="model", condition=cond, change=change(0.0), loss=loss, broke=loss > 0.10)
    return Point(role="model", condition=cond, learning_rate=lr, rank=rank, steps=steps,
                 row=Row(role="model", condition=cond, control=False, overall=change(shift)), capability=cap)


def test_worst_case_is_the_strongest_attack_within_the_bound():
    table = [point(2e-4, 4, 8, -1.0, 0.02), point(2e-4, 4, 16, -2.5, 0.08), point(1e-3, 4, 8, -6.0, 0.30),
             point(1e-3, 16, 16, -3.0, 0.10), point(1e-3, 16, 8, -0.5, -0.05)]
    chosen = worst(table)
    assert chosen is table[3]  # -3.0 nats at exactly 10% loss; -6.0 broke the model (30% lost)
    assert [p.within_bound for p in table] == [True, True, False, True, True]
    assert worst([table[2]]) is None  # every point broke the model


def test_points_are_read_back_from_condition_names():
    p = point(1e-3, 16, 16, -3.0, 0.0)
    [back] = points_of("model", "bad-medical", [p.row], [p.capability])
    assert (back.learning_rate, back.rank, back.steps) == (1e-3, 16, 16)
    assert Condition.parse(p.condition.label) == p.condition
    assert points_of("model", "good-medical", [p.row], [p.capability]) == []


def test_search_plans(monkeypatch):
    from persist.jobs import sweep as search

    assert parse_search("quick") is GRIDS["quick"] and GRIDS["quick"].size >= 6
    monkeypatch.setattr(search, "optuna_installed", lambda: True)
    assert parse_search("optuna:5") == 5
    monkeypatch.setattr(search, "optuna_installed", lambda: False)  # Optuna is an optional extra
    with pytest.raises(Exception, match=r"needs Optuna: pip install 'persist\[search\]'"):
        parse_search("optuna:5")
    with pytest.raises(Exception, match="quick, full or optuna:N"):
        parse_search("fast")


@pytest.mark.slow
def test_sweep_on_the_tiny_model_resumes_point_by_point(tmp_path):
    from persist.tiny import tiny_model_folder
    from tests.test_crash import persist_cmd, run

    env = {**__import__("os").environ, "PERSIST_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    model = tiny_model_folder(tmp_path / "tiny")
    cmd = persist_cmd("finetune-attack", "--model", str(model), "--search", "quick", "--limit", "8",
                      "--capability", "12", "--batch-size", "4", "--runs-dir", str(tmp_path / "runs"), "--name", "s")
    # the quick grid trains 4 runs of 16 steps; step 40 is in the third (learning rate 1e-3, rank 4)
    assert run(cmd, env, failpoint="train-step:40") == -signal.SIGKILL
    folder = tmp_path / "runs" / "s"
    done = {json.loads(line)["condition"] for line in (folder / "records.jsonl").read_text().splitlines()}
    assert "finetune:bad-medical[lr=0.0002,r=16]@16" in done  # the first two runs were finished and scored
    before = (folder / "records.jsonl").read_text().splitlines()
    assert run(cmd, env) == 0
    after = (folder / "records.jsonl").read_text().splitlines()
    assert after[: len(before)] == before  # nothing finished was redone
    report = json.loads((folder / "report.json").read_text())
    assert report["kind"] == "search"
    labels = {r["condition"] for r in report["rows"]}
    assert len([c for c in labels if c.startswith("finetune:bad-medical[")]) == GRIDS["quick"].size
    chosen = report["search"]["worst_case"]["model"]
    assert chosen is None or chosen["condition"] in labels


def test_quick_grid_is_sized_for_a_cpu_unless_the_user_says_otherwise():
    from persist.jobs.finetune import FinetuneConfig

    quick = FinetuneConfig(model=ModelSpec.parse("tiny-random"), search="quick")
    assert quick.limit == 24 and quick.train["batch_size"] == 4 and quick.train["max_length"] == 256
    mine = FinetuneConfig(model=ModelSpec.parse("tiny-random"), search="quick", limit=8, train={"max_length": 128})
    assert mine.limit == 8 and mine.train["max_length"] == 128 and mine.train["batch_size"] == 4
    full = FinetuneConfig(model=ModelSpec.parse("tiny-random"), search="full")
    assert full.limit is None and full.train == {}


def test_terminal_keeps_bracketed_condition_labels(capsys):
    """Rich reads '[lr=0.001,r=16]' as a markup tag and drops it; tables and sentences print labels as plain text."""
    from persist.report.terminal import print_table

    print_table("sweep", (["model", "condition"], [["model", "finetune:bad-medical[lr=0.001,r=16]@8"]]))
    assert "finetune:bad-medical[lr=0.001,r=16]@8" in capsys.readouterr().out
