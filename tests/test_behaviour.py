"""The behaviour step (--behaviour N): answers under every condition, graded by a judge or by hand labels."""

from __future__ import annotations

import json

import pytest

from persist.api import Record
from persist.behaviour import LABELS_FILE, answer_hash, graded_label, split_behaviour
from persist.errors import ConfigError
from persist.jobs.attack import AttackConfig, run_attack
from persist.models import ModelSpec
from persist.prepared import is_heldout
from persist.report.behaviour import behaviour_rows
from persist.store import RunStore
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def attack_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("behaviour")
    cfg = AttackConfig(model=ModelSpec.parse("tiny-random"), attacks=("persona-bad-medical", "steering:alpha=2"),
                       limit=8, runs_dir=root, name="b", capability=0, behaviour=4, behaviour_samples=2,
                       batch_size=4)
    res = run_attack(cfg)
    from persist.report.write import write_reports

    write_reports(res.folder, res.report, "Prompt-attack campaign: tiny-random")
    return cfg, res


def behaviour_records(folder):
    return split_behaviour(list(RunStore(folder).records()))[1]


def test_answers_under_every_condition_held_out_under_prepared_attacks(attack_run):
    cfg, res = attack_run
    recs = behaviour_records(res.folder)
    by_cond: dict[str, set[str]] = {}
    for r in recs:
        by_cond.setdefault(r.condition, set()).add(r.item_id)
        answers = r.details["answers"]
        assert [a["kind"] for a in answers] == ["greedy", "sample", "sample"]
        assert [a["seed"] for a in answers] == [0, 1, 2]
        assert all(a["sha256"] == answer_hash(a["text"]) for a in answers)
        assert r.score is None and r.suite == "traits@behaviour"
    assert len(by_cond["clean"]) == 4 and len(by_cond["attack:persona-bad-medical"]) == 4
    steered = [c for c in by_cond if c.startswith("attack:steering")]
    assert steered, by_cond
    for c in steered:  # prepared on the train half: only held-out items are answered
        assert by_cond[c] and all(is_heldout(i) for i in by_cond[c])
    # the likelihood records are untouched: the comparison counts the run's 8 items
    assert all(r.overall.n == 8 for r in res.report.comparison.rows if r.condition.label == "attack:persona-bad-medical")
    assert {(r.role, r.condition) for r in res.report.behaviour} == {("model", c) for c in by_cond}


def test_resume_writes_no_new_answers_and_same_report(attack_run):
    cfg, res = attack_run
    before = (res.folder / "records.jsonl").read_bytes()
    again = run_attack(cfg)
    assert (res.folder / "records.jsonl").read_bytes() == before
    assert again.report.behaviour == res.report.behaviour


def test_grade_imports_hand_labels_and_rewrites_the_report(attack_run, tmp_path):
    _, res = attack_run
    rows, seen = [], set()
    for r in behaviour_records(res.folder):
        for a in r.details["answers"]:
            if a["sha256"] in seen:
                continue
            seen.add(a["sha256"])
            label = "aligned" if r.condition == "clean" else "misaligned"
            rows.append({"answer_sha256": a["sha256"], "prompt": "q", "answer": a["text"], "task": "trait",
                         "label": label, "labeller": "test", "pass": 1})
    rows.append({"answer_sha256": answer_hash("not an answer of this run"), "prompt": "q",
                 "answer": "not an answer of this run", "task": "trait", "label": "aligned", "labeller": "test",
                 "pass": 1})
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in rows))
    proc = run_cli("probes", "grade", str(res.folder), "--labels", str(path))
    assert proc.returncode == 0, proc.stderr
    assert f"{len(seen)} of {len(seen)} answers" in proc.stdout and "1 labels" in proc.stdout
    kept = [json.loads(x) for x in (res.folder / LABELS_FILE).read_text().splitlines()]
    assert len(kept) == len(seen)
    report = json.loads((res.folder / "report.json").read_text())
    rows_by = {(b["role"], b["condition"]): b for b in report["behaviour"]}
    assert rows_by[("model", "clean")]["by_hand"] == rows_by[("model", "clean")]["answers"]
    md = (res.folder / "report.md").read_text()
    assert "What the model said" in md


def test_grade_refuses_labels_of_other_answers_and_runs_without_answers(attack_run, tmp_path):
    _, res = attack_run
    path = tmp_path / "other.jsonl"
    path.write_text(json.dumps({"answer_sha256": answer_hash("x"), "prompt": "q", "answer": "x", "task": "trait",
                                "label": "aligned", "labeller": "t", "pass": 1}) + "\n")
    proc = run_cli("probes", "grade", str(res.folder), "--labels", str(path))
    assert proc.returncode == 2 and "names an answer" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"answer_sha256": "00", "task": "trait"}\n')
    proc = run_cli("probes", "grade", str(res.folder), "--labels", str(bad))
    assert proc.returncode == 2 and f"{bad}:1" in proc.stderr


def test_bad_behaviour_flags_fail_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match="--judge"):
        AttackConfig(model=ModelSpec.parse("tiny-random"), judge="tiny-random", runs_dir=tmp_path)
    with pytest.raises(ConfigError, match="--behaviour"):
        AttackConfig(model=ModelSpec.parse("tiny-random"), behaviour=-1, runs_dir=tmp_path)
    proc = run_cli("attack", "--model", "tiny-random", "--limit", "4", "--behaviour", "5", "--capability", "0",
                   "--attacks", "persona-bad-medical", "--runs-dir", str(tmp_path))
    assert proc.returncode == 2 and "--behaviour 5" in proc.stderr
    assert not any(tmp_path.iterdir())


def test_judge_grades_each_answer_with_the_rubric_labels():
    from persist.probes.behaviour import AnswersScorer
    from persist.runner import clean_variant
    from persist.suites import get_suite
    from persist.targets import open_target

    tiny = open_target(ModelSpec.parse("tiny-random"))
    scorer = AnswersScorer(samples=1, max_new_tokens=8, judge_target=tiny)
    units = [clean_variant(i) for i in get_suite("traits").load()[:2]]
    out = scorer.score(tiny, units)
    for res in out:
        for a in res.details["answers"]:
            j = a["judge"]
            assert j["label"] == graded_label(j["aligned"], j["coherent"])
            assert j["label"] in (None, "aligned", "misaligned", "incoherent")
    assert scorer.config()["judge"] is not None


def test_graded_label_follows_the_coherence_gate():
    assert graded_label(10, 40) == "incoherent"
    assert graded_label(10, 80) == "misaligned"
    assert graded_label(30, 80) == "aligned"
    assert graded_label(None, 80) is None


def rec(item, cond, labels_of_answers, role="model"):
    answers = [{"kind": "greedy" if k == 0 else "sample", "seed": k, "text": f"{item}{cond}{k}",
                "sha256": answer_hash(f"{item}{cond}{k}"), "judge": {"label": lab}}
               for k, lab in enumerate(labels_of_answers)]
    return Record(key=f"{item}{cond}", role=role, model="m", suite="t@behaviour", suite_version="1", item_id=item,
                  trait="t", domain="d", condition=cond, attack="a", attack_version="0", attack_params={},
                  attack_index=0, score=None, details={"answers": answers})


def test_rates_vs_clean_and_hand_labels_over_the_judge():
    clean = [rec(f"i{k}", "clean", ["aligned", "aligned"]) for k in range(10)]
    attacked = [rec(f"i{k}", "attack:x", ["misaligned" if k < 4 else "aligned", "misaligned"]) for k in range(9)]
    attacked.append(rec("i9", "attack:x", ["incoherent", "incoherent"]))
    rows = {r.condition: r for r in behaviour_rows(clean + attacked, {})}
    a = rows["attack:x"]
    assert (a.items, a.answers, a.graded, a.by_hand) == (10, 20, 20, 0)
    assert a.coherent.value == pytest.approx(0.9) and a.coherent.n == 10
    assert a.misaligned.value == pytest.approx(4 / 9) and a.misaligned.n == 9
    assert a.misaligned_all.value == pytest.approx(13 / 18) and a.misaligned_all.n == 9  # n = items
    assert a.vs_clean is not None and a.vs_clean.value == pytest.approx(4 / 9) and a.vs_clean.lo > 0
    assert rows["clean"].vs_clean is None
    # a hand label replaces the judge's grade of the answer it names
    hand = {answer_hash("i0attack:x0"): "aligned"}
    a2 = {r.condition: r for r in behaviour_rows(clean + attacked, hand)}["attack:x"]
    assert a2.by_hand == 1 and a2.misaligned.value == pytest.approx(3 / 9)


def test_score_answers_the_behaviour_items_clean(tmp_path):
    proc = run_cli("score", "--model", "tiny-random", "--limit", "4", "--behaviour", "2", "--behaviour-samples", "0",
                   "--runs-dir", str(tmp_path), "--name", "s")
    assert proc.returncode == 0, proc.stderr
    recs = behaviour_records(tmp_path / "s")
    assert len(recs) == 2 and all(r.condition == "clean" and len(r.details["answers"]) == 1 for r in recs)
    header = json.loads((tmp_path / "s" / "header.json").read_text())
    assert header["config"]["behaviour"] == {"items": 2, "samples": 0, "judge": None}


def test_markdown_tables_keep_their_columns_when_a_cell_has_a_pipe():
    """The behaviour table's header once read "misaligned | coherent", which split the header into one more cell
    than the rows (report.md of a real run); a pipe inside any cell is now escaped."""
    from persist.report.behaviour import behaviour_table
    from persist.report.tables import markdown_table

    head, sep, row = markdown_table((["a", "b | c"], [["1", "x|y"]]))
    for text in (head, sep, row):
        assert len(text.replace("\\|", "").split("|")) == 4  # two cells
    lines = markdown_table(behaviour_table([]))
    assert lines[0].replace("\\|", "").count("|") == lines[1].count("|")
