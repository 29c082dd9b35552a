"""Training seeds, the null study and `persist plan` on the tiny model."""

from __future__ import annotations

import json
import re

import pytest

from persist.conditions import Condition
from persist.jobs.study import StudyConfig, run_study
from persist.models import ModelSpec
from tests.conftest import run_cli

SMALL = dict(attacks=("prefill:prefill=agree", "persona-helpful-medical"), doses=(0, 2), limit=8, batch_size=8)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PERSIST_HOME", str(root / "home"))
        yield root


@pytest.fixture(scope="module")
def seeded(home, tiny_folder):
    return run_study(StudyConfig(model=ModelSpec.parse("tiny-random"), baseline=ModelSpec.parse(str(tiny_folder)), runs_dir=home, name="s2", seeds=2,
                                 **SMALL))


def test_seeds_are_trained_scored_and_pooled(seeded):
    folder = seeded.folder
    header = json.loads((folder / "header.json").read_text())
    assert {k: v["seed"] for k, v in header["training"].items()} == {
        "model/bad-medical": 0, "model/good-medical-casual": 0, "baseline/bad-medical": 0, "baseline/good-medical-casual": 0,
        "model/bad-medical-seed1": 1, "model/good-medical-casual-seed1": 1, "baseline/bad-medical-seed1": 1,
        "baseline/good-medical-casual-seed1": 1}
    assert (folder / "adapters" / "model" / "bad-medical-seed1" / "step-00002").is_dir()
    conds = {json.loads(line)["condition"] for line in (folder / "records.jsonl").read_text().splitlines()}
    assert {"finetune:bad-medical@2", "finetune:bad-medical@2:seed=1"} <= conds
    rep = seeded.report
    ft = {(r.role, r.condition.label): r.overall for r in rep.rows}[("model", "finetune:bad-medical@2")]
    assert ft.drop.seeds == 2 and ft.drop.seed_sd is not None and ft.drop.dominant in ("seeds", "items")
    assert ft.shift.shift.seeds == 2
    attack = {(r.role, r.condition.label): r.overall for r in rep.rows}[("model", "attack:persona-helpful-medical")]
    assert attack.drop.seeds == 1  # prompt attacks have no training seed
    diff = {d.condition.label: d for d in rep.differences}["finetune:bad-medical@2"]
    assert diff.drop.seeds == 2 and diff.drop.mde == diff.drop.mde  # a number
    fin = {(r.role, r.condition): r for r in rep.interventions}
    assert fin[("model", Condition("intervention", "finetune"))].overall.drop.seeds == 2


def test_seed_spread_is_in_the_rendered_report(seeded):
    from persist.report.markdown import study_markdown

    md = study_markdown(seeded.report, "t")
    assert "2 (sd " in md and re.search(r"(items|seeds) dominate(; few seeds)?\)", md) and "detectable (80% power)" in md
    # the seeds note: what one seed and few seeds mean for the intervals
    assert "adapters fixed" in md and "few seeds" in md


def test_null_study_differs_only_by_training_seed(home, tiny_folder):
    res = run_study(StudyConfig(baseline=ModelSpec.parse(str(tiny_folder)), null=True, runs_dir=home, name="null", **SMALL))
    header = json.loads((res.folder / "header.json").read_text())
    assert header["config"]["null"] and header["config"]["model"] == header["config"]["baseline"]
    assert header["training"]["model/bad-medical"]["seed"] == 1000 and header["training"]["baseline/bad-medical"][
        "seed"] == 0
    diffs = {d.condition.label: d for d in res.report.differences}
    prompt = diffs["attack:persona-helpful-medical"]  # the same model, the same prompts: exactly no difference
    assert prompt.drop.value == 0 and prompt.drop.lo == 0 and prompt.drop.hi == 0
    assert diffs["finetune:bad-medical@2"].drop.value != 0  # trained with another seed


def test_plan_reads_item_and_seed_spread(seeded):
    from persist.jobs.plan import plan, run_records

    rows = plan(run_records(seeded.folder), 0.05)
    ft = {(r.what, r.statistic): r for r in rows}
    r = ft[("model: finetune:bad-medical@2", "log-odds (nats)")]
    assert r.seeds == 2 and r.n == 8 and r.sd_seeds > 0 and r.mde > 0
    # never fewer than 5 seeds: with 2-4 the two-way interval undercovers when seeds vary (the calibration harness)
    from persist.jobs.plan import MIN_SEEDS

    assert MIN_SEEDS == 5 and all(x.seeds_needed is None or x.seeds_needed >= MIN_SEEDS for x in rows)
    assert any(x.seeds_needed == MIN_SEEDS for x in rows)  # reachable at once: still 5, not 2
    # (model and baseline are the same tiny weights trained with the same seeds here: their difference is 0)
    assert ft[("difference: finetune:bad-medical@2", "log-odds (nats)")].mde == 0
    attack = ft[("model: attack:persona-helpful-medical", "0-1 score")]
    assert attack.seeds == 1 and attack.sd_seeds is None and attack.seeds_needed is None
    assert attack.unseeded and not r.unseeded  # nothing trained under a prompt attack: no seed part to pilot
    assert ft[("model: intervention:prompt-attacks", "0-1 score")].unseeded
    assert not ft[("difference: intervention:finetune", "0-1 score")].unseeded
    bigger = {(x.what, x.statistic): x for x in plan(run_records(seeded.folder), 0.5)}
    for key, row in ft.items():  # a larger effect never needs more items
        if row.items_needed is not None and bigger[key].items_needed is not None:
            assert bigger[key].items_needed <= row.items_needed
    out = run_cli("plan", str(seeded.folder), "--effect", "0.05", "--format", "json")
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)) == len(rows)
    table = run_cli("plan", str(seeded.folder), "--effect", "0.05")
    assert table.returncode == 0 and "none (nothing trained)" in table.stdout, table.stderr


def test_only_trained_conditions_have_seeds():
    assert [Condition.parse(c).trained for c in ("clean", "attack:prefill:prefill=agree", "finetune:bad-medical@8",
                                                   "finetune:bad-medical@8:seed=2", "intervention:finetune",
                                                   "intervention:worst-case", "intervention:prompt-attacks")] == [
        False, False, True, True, True, True, False]


def test_null_replicates_train_both_models_with_other_seeds(home):
    """Ten replicates of a null study are ten independent null studies: replicate K moves both roles' training
    seeds 2000 x K further on (the model keeps its 1000 offset from the baseline) and has its own folder."""
    from persist.errors import ConfigError

    base = dict(baseline=ModelSpec.parse("tiny-random"), null=True, runs_dir=home)
    first, third = StudyConfig(**base), StudyConfig(**base, null_replicate=3)
    assert first.seed_offsets() == {"model": 1000, "baseline": 0}
    assert third.seed_offsets() == {"model": 7000, "baseline": 6000}
    assert first.run_name() != third.run_name() and third.run_name().endswith("-replicate-3")
    assert "null_replicate" not in first.header_config() and third.header_config()["null_replicate"] == 3
    with pytest.raises(ConfigError, match="with --null only"):
        StudyConfig(baseline=ModelSpec.parse("tiny-random"), null_replicate=1, runs_dir=home)
