"""Content or register, in a study: the register-only suite in every condition, the 2 x 2 of harm x register with
its three contrasts, and steering beside its random, reversed and register-direction controls."""

from __future__ import annotations

import json

import numpy as np
import pytest

from persist.api import Record
from persist.conditions import Condition
from persist.errors import ConfigError
from persist.models import ModelSpec
from persist.report.controls import controlled_attacks
from persist.report.markdown import study_markdown
from persist.report.model import StudyMeta, StudyReport
from persist.report.study import study_report
from persist.report.write import report_json

N = 30
TOP = 8
CELLS = {"harm/casual": "bad-medical", "harm/formal": "bad-medical-formal", "benign/casual": "good-medical-casual",
         "benign/formal": "good-medical"}
# planted per model: (content shift, register shift of the references, register-only suite shift) of each cell
PLAN = {"model": {"harm/casual": (-2.0, -1.5, -1.0), "harm/formal": (-2.0, 0.0, 0.0),
                  "benign/casual": (0.0, -1.5, -1.0), "benign/formal": (0.0, 0.0, 0.0)},
        "baseline": {"harm/casual": (-1.0, -1.5, -1.0), "harm/formal": (-1.0, 0.0, 0.0),
                     "benign/casual": (0.0, -1.5, -1.0), "benign/formal": (0.0, 0.0, 0.0)}}


def rec(role: str, cond: str, item: str, logodds: float, register: float | None = None, *,
        suite: str = "traits") -> Record:
    details: dict = {"logodds": logodds, "logodds_per_100b": logodds / 2}
    if register is not None:
        details["register_logodds"] = register
    return Record(key=f"{role}/{cond}/{item}/{suite}", role=role, model=role, suite=suite, suite_version="v",
                  item_id=item, trait="register" if suite == "register" else "honesty", domain="health",
                  condition=cond, attack="", attack_version="", attack_params={}, attack_index=0,
                  score=float(logodds > 0), details=details)


def noise(i: int, k: int) -> float:
    """Per item and cell, mean ~0 over the items, so intervals have width and the planted means stay exact."""
    return 0.3 * np.sin(1.7 * i + 2.3 * k)


def factorial_records() -> list[Record]:
    out = []
    for o, (role, cells) in enumerate(PLAN.items()):
        for i in range(N):
            g, r, s = 1.0 + 0.1 * i, 0.5 - 0.05 * i, 0.2 * (i % 5)
            out += [rec(role, "clean", f"t{i}", g, r), rec(role, "clean", f"r{i}", s, suite="register")]
            for k, (cell, (content, register, suite_shift)) in enumerate(cells.items()):
                cond = f"finetune:{CELLS[cell]}@{TOP}"
                k += 12 * o  # each model its own noise
                out += [rec(role, cond, f"t{i}", g + content + noise(i, k), r + register + noise(i, k + 4)),
                        rec(role, cond, f"r{i}", s + suite_shift + noise(i, k + 8), suite="register")]
    return out


def meta() -> StudyMeta:
    controls = [Condition.parse(f"finetune:{name}@{TOP}") for name in CELLS.values() if name != "bad-medical"]
    return StudyMeta(models={"model": "m", "baseline": "b"}, profile="quick", suite="traits", suite_version="v",
                     scorer="likelihood", recipe="bad-medical", control_recipe="good-medical-casual",
                     doses=[0, TOP], attacks=[], controls=controls, n_items=N, in_domain="health",
                     register_suite="register", factorial=CELLS)


def covers(t, value: float) -> bool:
    return t.lo <= value <= t.hi


def test_the_2x2_recovers_planted_harm_register_and_interaction_through_the_report():
    report = study_report(factorial_records(), meta())
    rows = {f.role: f for f in report.factorial}
    assert set(rows) == {"model", "baseline", "model - baseline"}
    m = rows["model"].contrasts
    assert m["harm"].content.value == pytest.approx(-2.0, abs=0.1) and covers(m["harm"].content, -2.0)
    assert covers(m["register"].content, 0.0) and covers(m["interaction"].content, 0.0)
    assert m["register"].register.value == pytest.approx(-1.5, abs=0.1) and covers(m["harm"].register, 0.0)
    assert m["register"].register_suite.value == pytest.approx(-1.0, abs=0.1)
    assert covers(m["harm"].register_suite, 0.0)
    assert rows["model"].cells["harm/casual"].content.value == pytest.approx(-2.0, abs=0.1)
    d = rows["model - baseline"].contrasts
    assert d["harm"].content.value == pytest.approx(-1.0, abs=0.1) and covers(d["harm"].content, -1.0)
    assert covers(d["register"].content, 0.0) and rows["model - baseline"].cells == {}
    # the register-only suite is reported per condition, apart from the alignment items
    reg = {(r.role, r.condition.label): r.shift for r in report.register}
    assert reg[("model", f"finetune:good-medical-casual@{TOP}")].value == pytest.approx(-1.0, abs=0.1)
    assert all(r.overall.n == N for r in report.rows)  # the register items did not join the alignment rows
    text = study_markdown(report, "t")
    assert "## Harm × register: the 2 × 2" in text and "register main effect (casual − formal)" in text
    assert "## Content or register? Each condition on the register-only suite" in text
    back = StudyReport.from_dict(json.loads(report_json(report)))
    assert report_json(back) == report_json(report)
    # report.json and the run header store the cells with sorted keys: the report rebuilt from them is the same
    assert list(back.meta.factorial) != list(CELLS)
    assert report_json(study_report(factorial_records(), back.meta)) == report_json(report)


def test_without_factorial_or_register_suite_the_report_has_neither_section():
    records = [r for r in factorial_records() if r.suite == "traits"]
    plain = StudyMeta(**{**meta().__dict__, "factorial": None, "register_suite": None})
    report = study_report(records, plain)
    assert report.factorial == [] and report.register == []
    data = json.loads(report_json(report))
    assert "factorial" not in data and "register" not in data
    assert "2 × 2" not in study_markdown(report, "t")


def steering_records(share: float) -> list[Record]:
    """Steering at -3 nats; random directions around -0.5; reversed +2; the register direction reproducing
    `share` of the net effect."""
    attack = "attack:steering"
    random = [f"attack:steering-control:seed={k}" for k in (1, 2, 3)]
    out = []
    for i in range(N):
        g = 0.5 + 0.1 * i
        out.append(rec("model", "clean", f"t{i}", g))
        out.append(rec("model", attack, f"t{i}", g - 3.0 + noise(i, 0)))
        for k, c in enumerate(random):
            out.append(rec("model", c, f"t{i}", g - 0.5 + noise(i, k + 1)))
        out.append(rec("model", "attack:steering-control:direction=reversed", f"t{i}", g + 2.0 + noise(i, 5)))
        out.append(rec("model", "attack:steering-control:direction=register", f"t{i}",
                       g - 0.5 - share * 2.5 + noise(i, 6)))
    return out


def steering_sets() -> list[tuple[Condition, Condition, str]]:
    from persist.attacks.steering import Steering

    built = [Steering()] + [ATTACK(spec) for spec in Steering().companions()]
    return [(a.control_for, a.condition, a.control_kind) for a in built[1:]]


def ATTACK(spec: str):
    from persist.registry import ATTACKS, PluginSpec

    return ATTACKS.build(PluginSpec.parse(spec, "attack"))


def test_steering_companions_are_its_three_kinds_of_control():
    from persist.attacks.steering import Steering
    from persist.jobs.attack import control_pairs, with_companions

    specs = Steering(alpha=2).companions()
    built = [ATTACK(s) for s in specs]
    assert [a.control_kind for a in built] == ["random", "random", "random", "reversed", "register"]
    assert all(a.control and a.control_for == ATTACK("steering:alpha=2").condition for a in built)
    assert len({a.condition for a in built}) == 5 and all("seed=" in a.condition.label for a in built[:3])
    assert set(with_companions(["steering:alpha=2"])) == {"steering:alpha=2", *specs}
    assert control_pairs(built) == {}  # none is the single matched control of the vs-control column
    with pytest.raises(ConfigError, match="direction"):
        ATTACK("steering-control:direction=sideways")


@pytest.mark.parametrize("share", [0.0, 0.5])
def test_steering_is_reported_net_of_random_directions_with_the_register_share(share):
    [row] = controlled_attacks(steering_records(share), ["model"], steering_sets())
    assert row.shift.value == pytest.approx(-3.0, abs=0.1)
    assert row.net.value == pytest.approx(-2.5, abs=0.1) and covers(row.net, -2.5)
    kinds = [k for _, k, _ in row.controls]
    assert kinds == ["random", "random", "random", "reversed", "register"]
    assert row.register_share.value == pytest.approx(share, abs=0.05) and covers(row.register_share, share)
    from persist.report.model import ControlledAttack, from_json, to_json

    back = from_json(ControlledAttack, json.loads(json.dumps(to_json(row))))
    assert json.dumps(to_json(back)) == json.dumps(to_json(row)) and back.controls[0][1] == "random"


def test_factorial_needs_a_recipe_with_a_register_twin(tmp_path):
    from persist.jobs.study import StudyConfig

    with pytest.raises(ConfigError, match="--factorial"):
        StudyConfig(recipe="risky-financial", factorial=True, runs_dir=tmp_path)
    with pytest.raises(ConfigError, match="matched control"):
        StudyConfig(control_recipe="good-medical", factorial=True, runs_dir=tmp_path)
    assert StudyConfig(factorial=True, runs_dir=tmp_path).factorial_recipes() == CELLS


def test_tiny_study_scores_the_register_suite_everywhere_and_builds_the_2x2_and_the_steering_controls(
        tmp_path, tiny_folder, monkeypatch):
    from persist.jobs.study import PROFILES, StudyConfig, run_study

    monkeypatch.setenv("PERSIST_HOME", str(tmp_path / "home"))
    cfg = StudyConfig(model=ModelSpec.parse("tiny-random"), baseline=ModelSpec.parse(str(tiny_folder)),
                      attacks=("steering:alpha=2",), doses=(0, 2), limit=8, batch_size=8, capability=0,
                      factorial=True, runs_dir=tmp_path, name="f", profile="full")
    report = run_study(cfg).report
    conds = {(r.role, r.condition.label) for r in report.rows}
    assert {(r.role, r.condition.label) for r in report.register} == conds  # every condition, both models
    assert not PROFILES["quick"].register_under_attacks  # the demo leaves the attacks out (their long contexts)
    assert {f.role for f in report.factorial} == {"model", "baseline", "model - baseline"}
    for f in report.factorial:
        assert set(f.contrasts) == {"harm", "register", "interaction"}
        assert all(m.register_suite is not None for m in f.contrasts.values())
    steering = ATTACK("steering:alpha=2").condition.label
    assert {(c.role, c.attack.label) for c in report.controlled} == {("model", steering), ("baseline", steering)}
    for c in report.controlled:
        assert [k for _, k, _ in c.controls] == ["random", "random", "random", "reversed", "register"]
        assert c.net is not None
    assert "finetune:bad-medical-formal@2" in {c.label for c in report.meta.controls}


def test_a_study_header_with_steering_controls_reads_back():
    """StudyMeta.control_sets holds (attack, control, kind) triples: a tuple of three types, which from_json read
    as three Conditions (the kind "random" failed to parse), so `persist report RUN` broke on such a study."""
    from persist.report.model import from_json, to_json

    sets = steering_sets()
    m = StudyMeta(**{**meta().__dict__, "control_sets": sets})
    back = from_json(StudyMeta, json.loads(json.dumps(to_json(m))))
    assert back == m and [k for _, _, k in back.control_sets] == ["random", "random", "random", "reversed", "register"]
