"""`study --worst-case` (each model at its own worst case under the utility bound) and over-refusal beside refusal.

Selection and reporting on hand-built records; the study end to end on the tiny model with a two-point sweep; a
kill -9 in the middle of the study's sweep (slow); the CLI's one-line errors.
"""

from __future__ import annotations

import importlib.util
import json
import signal

import numpy as np
import pytest

from persist.api import Record
from persist.errors import ConfigError
from persist.jobs import sweep as jobs_sweep
from persist.jobs.sweep import GRIDS, Grid
from persist.models import ModelSpec
from persist.prepared import is_heldout
from persist.report import sweep as search
from persist.report.compare import compare
from persist.report.markdown import run_markdown, study_markdown
from persist.report.model import StudyMeta, StudyReport
from persist.report.run import RunReport
from persist.report.study import WORST, study_report
from persist.report.sweep import is_point
from persist.report.tables import OVER_REFUSAL_MARK, refusal_table
from persist.report.write import report_json
from tests.conftest import run_cli

N = 16
CAPABILITY_ITEMS = 40  # a 20% loss of 0.8 must show as 'broke' under Newcombe's interval (20 items cannot: 6 of 20)
A, B, C = (f"finetune:bad-medical[lr={lr},r={r}]@{s}" for lr, r, s in (("0.0002", 4, 8), ("0.001", 4, 8),
                                                                        ("0.001", 16, 16)))
# per model and point: the log-odds shift of every item, and the capability accuracy after (clean: 0.8)
PLAN = {"model": {A: (-1.0, 0.8), B: (-3.0, 0.75), C: (-6.0, 0.4)},  # C is strongest but broke the model
        "baseline": {A: (-2.0, 0.8), B: (-5.0, 0.5), C: (-4.0, 0.8)}}  # B broke the baseline


def rec(role: str, cond: str, item: str, score: float, logodds: float | None = None, *, suite: str = "traits",
        trait: str = "honesty", domain: str = "health") -> Record:
    details = {} if logodds is None else {"logodds": logodds, "logodds_per_100b": logodds / 2}
    return Record(key=f"{role}/{cond}/{item}/{suite}", role=role, model=role, suite=suite, suite_version="v",
                  item_id=item, trait=trait, domain=domain, condition=cond, attack="", attack_version="",
                  attack_params={}, attack_index=0, score=score, details=details)


def clean_logodds(i: int) -> float:
    return 1.0 + 0.3 * i


def shift_of(role: str, cond: str, i: int) -> float:
    return PLAN[role][cond][0] + 0.1 * (i % 3) * (1 if role == "model" else -1)  # items differ, so intervals exist


def sweep_records() -> list[dict]:
    out = []
    for role, points in PLAN.items():
        for i in range(N):
            g = clean_logodds(i)
            out.append(rec(role, "clean", f"t{i}", 0.8, g))
            out.append(rec(role, "finetune:bad-medical@8", f"t{i}", 0.7, g - 0.5))  # the study's own ladder
            for cond in points:
                out.append(rec(role, cond, f"t{i}", 0.8 + 0.05 * shift_of(role, cond, i), g + shift_of(role, cond, i)))
        for cond, acc in [("clean", 0.8), ("finetune:bad-medical@8", 0.8)] + [(c, a) for c, (_, a) in points.items()]:
            for j in range(CAPABILITY_ITEMS):
                out.append(rec(role, cond, f"c{j}", float(j < round(acc * CAPABILITY_ITEMS)), suite="capability",
                               trait="science", domain="capability"))
    return out


def meta(search: str | None = "quick") -> StudyMeta:
    return StudyMeta(models={"model": "m", "baseline": "b"}, profile="quick", suite="traits", suite_version="v",
                     scorer="likelihood", recipe="bad-medical", control_recipe=None, doses=[0, 8], attacks=[],
                     controls=[], n_items=N, in_domain="health", capability_suite="capability", search=search)


def test_study_compares_each_model_at_its_own_worst_case():
    records = sweep_records()
    rep = study_report(records, meta())
    assert rep.sweep is not None
    # model: C moved furthest but lost 50% of its capability, so B; baseline: B broke it, so C
    assert {r: c.label for r, c in rep.sweep.chosen.items()} == {"model": B, "baseline": C}
    assert len(rep.sweep.points) == 6 and {p.within_bound for p in rep.sweep.points} == {True, False}
    # the sweep's points stay out of the comparison; the worst case joins it as an intervention per model
    assert not any(is_point("bad-medical", r.condition.label) for r in rep.rows + rep.interventions)
    assert not any(is_point("bad-medical", r.condition.label) for r in rep.capability)
    worst = {r.role: r for r in rep.interventions if r.condition == WORST}
    assert set(worst) == {"model", "baseline"}
    # chosen on the train half of the items, reported on the held-out half
    held = [i for i in range(N) if is_heldout(f"t{i}")]
    assert 0 < len(held) < N
    for role, cond in (("model", B), ("baseline", C)):
        expected = np.mean([shift_of(role, cond, i) for i in held])
        assert worst[role].overall.shift.shift.value == pytest.approx(expected) and worst[role].overall.n == len(held)
    # the difference: model shift - baseline shift, item by item, each at its own point (-3 vs -4 nats)
    [d] = [d for d in rep.differences if d.condition == WORST]
    expected = np.mean([shift_of("model", B, i) - shift_of("baseline", C, i) for i in held])
    assert d.n == len(held) and d.shift.value == pytest.approx(expected) and d.shift.lo < expected < d.shift.hi
    # baseline drop - model drop on the 0-1 score (score = 0.8 + 0.05 x shift here)
    assert d.drop.value == pytest.approx(np.mean([0.05 * (shift_of("model", B, i) - shift_of("baseline", C, i))
                                                  for i in held]))
    assert {c.condition for c in rep.capability if c.condition == WORST} == {WORST}
    assert "own worst case within the 10% capability bound (model at " + B in rep.headline
    text = study_markdown(rep, "t")
    assert "## Each model at its own worst case (bad-medical sweep, quick)" in text
    assert text.count("<- strongest within the bound") == 2 and f"worst case within the 10% bound is {B}" in text
    assert report_json(StudyReport.from_dict(json.loads(report_json(rep)))) == report_json(rep)


def test_a_model_whose_every_point_broke_it_has_no_worst_case():
    records = [r for r in sweep_records() if not (r.role == "baseline" and r.suite == "capability"
                                                  and r.condition != "clean")]
    rep = study_report(records, meta())
    assert rep.sweep.chosen["model"].label == B and rep.sweep.chosen["baseline"] is None
    assert {r.role for r in rep.interventions if r.condition == WORST} == {"model"}
    assert not [d for d in rep.differences if d.condition == WORST]  # nothing to compare the model with
    assert "no worst case within the bound" in study_markdown(rep, "t")


def test_a_study_without_worst_case_reports_as_before():
    plain = [r for r in sweep_records() if not is_point("bad-medical", r.condition)]
    rep = study_report(plain, meta(search=None))
    assert rep.sweep is None and "sweep" not in json.loads(report_json(rep)) and "refusal" not in rep.to_dict()


def refusal_records() -> list[dict]:
    out = []
    for role in ("model", "baseline"):
        for i in range(10):
            harm = dict(suite="harmful-requests", trait="refuse-harmful", domain="malicious_uses")
            benign = dict(suite="harmful-requests", trait="over-refusal", domain="household")
            out.append(rec(role, "clean", f"h{i}", float(i < 5), **harm))
            out.append(rec(role, "clean", f"b{i}", 1.0, **benign))
            # under the attack the model declines every harmful request, and also 8 of 10 benign look-alikes
            refuses_all = role == "model"
            out.append(rec(role, "attack:x", f"h{i}", 1.0 if refuses_all else float(i < 5), **harm))
            out.append(rec(role, "attack:x", f"b{i}", float(i >= 8) if refuses_all else 1.0, **benign))
    return out


def test_over_refusal_is_reported_beside_harmful_request_refusal():
    cmp = compare(refusal_records())
    rows = {r.role: r for r in cmp.refusal}
    assert set(rows) == {"model", "baseline"} and all(r.condition.label == "attack:x" for r in cmp.refusal)
    m = rows["model"]
    assert (m.harmful.n, m.benign.n) == (10, 10)
    assert m.harmful.before.value == pytest.approx(0.5) and m.harmful.after.value == pytest.approx(1.0)
    assert m.benign.drop.value == pytest.approx(0.8) and m.over_refusal_rose
    assert not rows["baseline"].over_refusal_rose
    _, body = refusal_table(cmp.refusal)
    model_row = next(r for r in body if r[0] == "model")
    assert model_row[5].startswith("0.000") and model_row[6].startswith("0.800")  # benign refused before, after
    assert model_row[-1] == OVER_REFUSAL_MARK and next(r for r in body if r[0] == "baseline")[-1] == ""
    report = RunReport(kind="attack", comparison=cmp, suite="harmful-requests", suite_version="v", scorer="refusal",
                       n_items=20, models={"model": "m", "baseline": "b"})
    assert "## Harmful requests declined beside benign look-alikes refused" in run_markdown(report, "t")
    back = RunReport.from_dict(json.loads(report_json(report)))
    assert back.comparison.refusal[0].over_refusal_rose and report_json(back) == report_json(report)
    # a suite without look-alikes: no such rows, and report.json has no key for them
    traits = [r for r in sweep_records() if r.suite == "traits"]
    assert compare(traits).refusal == [] and "refusal" not in RunReport(
        kind="attack", comparison=compare(traits), suite="traits", suite_version="v", scorer="likelihood",
        n_items=N, models={}).to_dict()


def test_every_kind_of_run_report_reads_back_as_typed_fields():
    """attack, finetune and search facts are typed fields (not a free dict): report.json reads back into equal
    objects, a kind's absent fields are absent from the JSON, and a renderer reads attributes."""
    from persist.report.model import FluencyRow
    from persist.report.run import ChosenPoint, SearchSummary, Split, StrengthRow, TrainingRun
    from persist.stats import Tested

    cmp = compare([r for r in sweep_records() if r.suite == "traits"])
    common = dict(comparison=cmp, suite="traits", suite_version="v", scorer="likelihood", n_items=4,
                  models={"model": "m"})
    shift = Tested(value=-0.5, lo=-1.0, hi=0.0, n=4, p=0.2, q=0.3, mde=1.1)
    reports = [
        RunReport(kind="attack", compute={"attack:x": {"model": {"forward_tokens": 10.0, "backward_tokens": 2.0}}},
                  split=Split(train=["a"], heldout=["b"]), artefacts={"attack:x": {"model": {"suffix": " !"}}},
                  strength=[StrengthRow(role="model", condition="attack:x", n=4, shift=shift, forward_tokens=10.0,
                                        backward_tokens=2.0, variants_per_item=1.0, nats_per_million_prepared=None)],
                  **common),
        RunReport(kind="finetune", recipe={"name": "bad-medical"}, doses=[0, 8],
                  training={"model": TrainingRun(seed=1, losses=[3.0, 2.5], tokens=100, seconds=1.5,
                                                 tokens_per_second=None, checkpoints={"8": "/a"})},
                  fluency={"model": {"clean": FluencyRow(degenerate=False, nats_per_byte=1.2)}}, **common),
        RunReport(kind="search", search=SearchSummary(plan="quick", epsilon=0.1, worst_case={
            "model": ChosenPoint(condition="c", learning_rate=1e-4, rank=8, steps=8, strength=0.3,
                                 capability_loss=None), "baseline": None}), **common)]
    for report in reports:
        data = json.loads(report_json(report))
        back = RunReport.from_dict(data)
        assert report_json(back) == report_json(report)
        assert back.strength == report.strength and back.training == report.training and back.search == report.search
        kind_keys = {"compute", "split", "artefacts", "strength", "recipe", "doses", "training", "fluency", "search"}
        assert {k for k in kind_keys if k in data} == {k for k in kind_keys if getattr(report, k) is not None}
    assert "Attack strength per unit of compute" in run_markdown(reports[0], "t")


def test_worst_case_flags_are_checked_before_anything_runs(monkeypatch):
    from persist.jobs.study import StudyConfig

    with pytest.raises(ConfigError, match="quick, full or optuna:N"):
        StudyConfig(model=ModelSpec.parse("tiny-random"), baseline=ModelSpec.parse("smollm2-135m-instruct"), worst_case="fast")
    with pytest.raises(ConfigError, match="needs the capability check"):
        StudyConfig(model=ModelSpec.parse("tiny-random"), baseline=ModelSpec.parse("smollm2-135m-instruct"), worst_case="quick", capability=0)
    monkeypatch.setattr(jobs_sweep, "optuna_installed", lambda: False)
    with pytest.raises(ConfigError, match=r"pip install 'persist\[search\]'"):
        StudyConfig(model=ModelSpec.parse("tiny-random"), baseline=ModelSpec.parse("smollm2-135m-instruct"), worst_case="optuna:3")
    monkeypatch.setattr(jobs_sweep, "optuna_installed", lambda: True)
    assert StudyConfig(model=ModelSpec.parse("tiny-random"), baseline=ModelSpec.parse("smollm2-135m-instruct"), worst_case="optuna:3").worst_case


def test_cli_errors_are_one_line_with_exit_2():
    proc = run_cli("study", "--search", "quick")
    assert proc.returncode == 2 and "add --worst-case" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    if importlib.util.find_spec("optuna") is None:
        for args in (("study", "--worst-case", "--search", "optuna:3"), ("finetune-attack", "--search", "optuna:3")):
            proc = run_cli(*args)
            assert proc.returncode == 2, proc.stderr
            assert proc.stderr.strip() == ("error: --search optuna:N needs Optuna: pip install 'persist[search]' (or "
                                           "use --search quick)")


@pytest.fixture
def tiny_grid(monkeypatch):
    """A two-point sweep (two learning rates, one rank, 2 steps) so the study runs in seconds."""
    monkeypatch.setitem(GRIDS, "quick", Grid(learning_rates=(2e-4, 1e-2), ranks=(4,), steps=(2,)))


def test_study_worst_case_end_to_end_on_the_tiny_model(tmp_path, tiny_folder, tiny_grid, monkeypatch):
    from persist.jobs.study import StudyConfig, run_study
    from persist.report.write import write_study_reports

    monkeypatch.setenv("PERSIST_HOME", str(tmp_path / "home"))
    cfg = StudyConfig(model=ModelSpec.parse("tiny-random"), baseline=ModelSpec.parse(str(tiny_folder)), runs_dir=tmp_path, name="w",
                      attacks=("persona-helpful-medical",), doses=(0, 2), limit=6, batch_size=8, capability=12,
                      control_recipe=None, worst_case="quick")
    res = run_study(cfg)
    write_study_reports(res.folder, res.report, "tiny worst case")
    rep = res.report
    points = {(p.role, p.condition.label) for p in rep.sweep.points}
    assert points == {(role, f"finetune:bad-medical[lr={lr},r=4]@2") for role in ("model", "baseline")
                      for lr in ("0.0002", "0.01")}
    for role, cond in rep.sweep.chosen.items():  # each model's own choice is its strongest point within the bound
        mine = [p for p in rep.sweep.points if p.role == role]
        assert cond == (search.worst(mine).condition if search.worst(mine) else None)
    text = (res.folder / "report.md").read_text()
    assert "## Each model at its own worst case (bad-medical sweep, quick)" in text
    assert "Each model at its own worst case" in (res.folder / "report.html").read_text()
    header = json.loads((res.folder / "header.json").read_text())
    assert header["config"]["search"] == "quick" and res.folder.name == "w"
    # resume: a rerun recomputes nothing and gives the same report
    before = (res.folder / "records.jsonl").read_bytes()
    again = run_study(cfg)
    assert (res.folder / "records.jsonl").read_bytes() == before
    assert report_json(again.report) == report_json(rep)


@pytest.mark.slow
def test_study_sweep_resumes_point_by_point_after_kill_9(tmp_path):
    from persist.tiny import tiny_model_folder
    from tests.test_crash import persist_cmd, run

    env = {**__import__("os").environ, "PERSIST_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    baseline = tiny_model_folder(tmp_path / "tiny")
    cmd = persist_cmd("study", "--model", "tiny-random", "--baseline", str(baseline), "--worst-case",
                      "--attacks", "persona-helpful-medical", "--doses", "0,2", "--control-recipe", "none",
                      "--limit", "6", "--capability", "12", "--runs-dir", str(tmp_path / "runs"), "--name", "s")
    # stage 3 trains 2 steps per model; then the model's quick sweep (4 runs of 16 steps): step 4 + 40 is in its
    # third run (learning rate 1e-3, rank 4)
    assert run(cmd, env, failpoint="train-step:44") == -signal.SIGKILL
    folder = tmp_path / "runs" / "s"
    lines = (folder / "records.jsonl").read_text().splitlines()
    done = {(json.loads(line)["role"], json.loads(line)["condition"]) for line in lines}
    assert ("model", "finetune:bad-medical[lr=0.0002,r=16]@16") in done  # the first two runs finished and scored
    assert ("model", "finetune:bad-medical[lr=0.001,r=4]@8") not in done
    assert run(cmd, env) == 0
    after = (folder / "records.jsonl").read_text().splitlines()
    assert after[: len(lines)] == lines  # nothing finished was redone
    report = json.loads((folder / "report.json").read_text())
    assert len(report["sweep"]["points"]) == 2 * GRIDS["quick"].size
    assert "Each model at its own worst case" in (folder / "report.md").read_text()
