"""RUN/timings.jsonl and the wall time `persist plan` predicts from it (persist.timings)."""

from __future__ import annotations

import json

import pytest

from persist.jobs.study import StudyConfig, run_study
from persist.models import ModelSpec
from persist.timings import Span, cost_of, duration, read_spans
from tests.conftest import run_cli

SMALL = dict(attacks=("persona-helpful-medical",), doses=(0, 2), limit=8, batch_size=8, capability=4,
             register_suite=None, behaviour=1, behaviour_samples=0)


def test_cost_splits_by_what_grows_and_predicts_linearly():
    spans = [Span("load", 4.0, "a", condition="clean"),
             Span("score", 10.0, "a", condition="clean", suite="traits", units=8),
             Span("score", 6.0, "a", condition="attack:persona-helpful-medical", suite="traits", units=8),
             Span("score", 3.0, "a", condition="clean", suite="capability", units=4),
             Span("prepare", 2.0, "a", condition="attack:steering"),
             Span("train", 20.0, "a", condition="finetune:bad-medical@2", steps=2),
             Span("load", 1.0, "a", condition="finetune:bad-medical@2"),
             Span("score", 12.0, "a", condition="finetune:bad-medical@2", suite="traits", units=8),
             Span("score", 3.0, "a", condition="finetune:bad-medical@2", suite="capability", units=4),
             Span("run", 70.0, "a")]
    c = cost_of(spans, {"traits"}, items=8, seeds=1)
    assert c is not None and c.complete
    assert (c.fixed, c.per_items, c.per_seeds, c.per_items_seeds) == (4 + 3 + 2 + 9, 16, 24, 12)
    assert c.measured == 70 and c.predict(8, 1) == pytest.approx(70)  # the pilot itself, overhead included
    # 32 items x 3 seeds: items x4, seeds x3, both x12
    assert c.predict(32, 3) == pytest.approx(18 + 16 * 4 + 24 * 3 + 12 * 12)


def test_an_interrupted_session_and_a_rerun_that_only_reports():
    killed = [Span("score", 5.0, "k", condition="clean", suite="traits", units=4)]  # no run span: kill -9
    resumed = [Span("score", 5.0, "r", condition="clean", suite="traits", units=4), Span("run", 8.0, "r")]
    again = [Span("run", 3.0, "x")]  # the finished run rerun: it only re-reports, nothing to add to the design
    c = cost_of(killed + resumed + again, {"traits"}, items=8, seeds=1)
    assert c is not None and not c.complete
    assert c.per_items == 10 and c.measured == 8 and c.fixed == 3  # 8 s measured, 5 of them timed
    assert cost_of(again, {"traits"}, 8, 1) is None and cost_of([], {"traits"}, 8, 1) is None


def test_duration_reads_like_a_clock():
    assert [duration(s) for s in (42, 125, 3600 + 5 * 60 + 20)] == ["42 s", "2 min", "1 h 05 min"]


@pytest.fixture(scope="module")
def pilot(tmp_path_factory, tiny_folder):
    root = tmp_path_factory.mktemp("timings")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PERSIST_HOME", str(root / "home"))
        cfg = StudyConfig(model=ModelSpec.parse("tiny-random"), baseline=ModelSpec.parse(str(tiny_folder)),
                          runs_dir=root, name="pilot", **SMALL)
        yield run_study(cfg), cfg


def test_a_study_times_every_part(pilot):
    res, cfg = pilot
    spans = read_spans(res.folder)
    phases = {(s.phase, s.role, s.condition, s.suite) for s in spans}
    for role in ("model", "baseline"):
        assert ("score", role, "clean", "traits") in phases
        assert ("score", role, "finetune:bad-medical@2", "traits") in phases
        assert ("score", role, "finetune:bad-medical@2", "capability") in phases
        assert ("train", role, "finetune:bad-medical@2", None) in phases
        assert ("load", role, "finetune:bad-medical@2", None) in phases
    assert [s.units for s in spans if (s.phase, s.role, s.condition, s.suite) == ("score", "model", "clean",
                                                                                  "traits")] == [8]
    assert [s.phase for s in spans].count("run") == 1 and spans[-1].phase == "run"
    assert all(s.seconds >= 0 for s in spans)
    # a rerun of the finished study scores nothing: no part timed, one more run span, the same cost
    from persist.jobs.plan import pilot_cost, run_records

    before = pilot_cost(res.folder, run_records(res.folder))
    run_study(cfg)
    after = pilot_cost(res.folder, run_records(res.folder))
    assert before is not None and before == after and before.items == 8 and before.seeds == 1
    assert before.per_items > 0 and before.per_seeds > 0 and before.per_items_seeds > 0
    # the behaviour answers (a fixed number of items, whatever --limit) never grow with the items
    probe = sum(s.seconds for s in spans if s.phase == "score" and s.suite == "traits" and s.condition in (
        "clean", "attack:persona-helpful-medical"))
    assert before.per_items == pytest.approx(probe, abs=1e-3)
    assert any(s.suite == "traits@behaviour" for s in spans)
    # the records do not hold a wall time: a resumed run still writes the same bytes
    assert "seconds" not in (res.folder / "records.jsonl").read_text()


def test_plan_prints_the_predicted_wall_time(pilot):
    res, _ = pilot
    out = run_cli("plan", str(res.folder))
    assert out.returncode == 0, out.stderr
    assert "Wall times (~) are predicted for this machine from the pilot's" in out.stdout
    assert "at 8 items x 1 seed(s)" in out.stdout
    js = run_cli("plan", str(res.folder), "--format", "json")
    rows = json.loads(js.stdout)
    reach = [r for r in rows if r["items_needed"] is not None]
    assert reach and all(r["predicted_seconds_items_needed"] > 0 for r in reach)


def test_a_pilot_without_timings_says_so(pilot, tmp_path):
    import shutil

    res, _ = pilot
    old = tmp_path / "old"
    shutil.copytree(res.folder, old)
    (old / "timings.jsonl").unlink()
    out = run_cli("plan", str(old))
    assert out.returncode == 0, out.stderr
    assert "No predicted wall time" in out.stdout and "rerun the pilot" in out.stdout
