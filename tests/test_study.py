"""The study on the tiny model: end to end, bit-identical reports, schema round-trip, `report --against`, HTML."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from persist.errors import ConfigError, DataError
from persist.jobs.study import StudyConfig, run_study
from persist.models import ModelSpec
from persist.report.html import render_html
from persist.report.model import Answer, Example, StudyReport
from persist.report.rerender import against, rebuild
from persist.report.study import FINETUNE, PROMPT
from persist.stats import Tested
from tests.conftest import run_cli

# with two behaviour items answered (greedy + 1 sample) under every condition
SMALL = dict(attacks=("prefill:prefill=agree", "persona-helpful-medical"), doses=(0, 2), limit=8, batch_size=8,
             behaviour=2, behaviour_samples=1)


@pytest.fixture(scope="module", autouse=True)
def study_root(tmp_path_factory):
    """This module's runs and model cache (PERSIST_HOME), restored afterwards."""
    root = tmp_path_factory.mktemp("study")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PERSIST_HOME", str(root / "home"))
        yield root


@pytest.fixture(scope="module")
def two_runs(study_root, tiny_folder):
    """The same tiny study twice, in two run folders."""
    from persist.report.write import write_study_reports

    out = []
    for name in ("a", "b"):
        cfg = StudyConfig(model=ModelSpec.parse("tiny-random"), baseline=ModelSpec.parse(str(tiny_folder)), runs_dir=study_root, name=name, **SMALL)
        res = run_study(cfg)
        write_study_reports(res.folder, res.report, "tiny study")
        out.append(res)
    return out


def test_study_runs_every_stage_for_both_models(two_runs):
    rep = two_runs[0].report
    conds = {(r.role, r.condition.label) for r in rep.rows}
    for role in ("model", "baseline"):
        assert (role, "attack:prefill:prefill=agree") in conds
        assert (role, "attack:persona-helpful-medical") in conds
        assert (role, "finetune:bad-medical@2") in conds and (role, "finetune:good-medical-casual@2") in conds
    assert {(r.role, r.condition) for r in rep.interventions} == {
        (role, c) for role in ("model", "baseline") for c in (PROMPT, FINETUNE)}
    assert [p.dose for p in rep.curves["model"]] == [0, 2]
    assert all(r.overall.n == 8 for r in rep.rows)
    controls = {r.condition.label for r in rep.rows if r.control}
    assert controls == {"attack:persona-helpful-medical", "finetune:good-medical-casual@2"}
    qs = [d.drop.q for d in rep.differences] + [d.shift.q for d in rep.differences]
    assert len(qs) == 2 * (len({r.condition for r in rep.rows}) + 2) and all(0 <= q <= 1 for q in qs)
    assert rep.headline.startswith("Under bad-medical fine-tuning")


def test_study_answers_the_behaviour_items_under_every_condition(two_runs):
    rep = two_runs[0].report
    got = {(b.role, b.condition) for b in rep.behaviour}
    want = {(r.role, r.condition.label) for r in rep.rows} | {(role, "clean") for role in ("model", "baseline")}
    assert got == want
    assert all(b.items == 2 and b.answers == 4 and b.graded == 0 for b in rep.behaviour)
    html = (two_runs[0].folder / "report.html").read_text()
    assert "What the model said" in html and "No answer is graded yet" in html


def test_report_json_bit_identical_across_runs(two_runs):
    a, b = (r.folder / "report.json" for r in two_runs)
    assert a.read_bytes() == b.read_bytes()


def test_report_json_schema_round_trip_and_rerender(two_runs):
    folder = two_runs[0].folder
    data = json.loads((folder / "report.json").read_text())
    from persist.report.write import report_json

    loaded = StudyReport.from_dict(data)
    assert isinstance(loaded.rows[0].overall.drop, Tested)  # typed objects survive report.json
    assert report_json(loaded) == report_json(two_runs[0].report)  # (JSON: NaN != NaN in ==)
    rebuilt = rebuild(folder)
    assert isinstance(rebuilt, StudyReport) and report_json(rebuilt) == report_json(loaded)
    with pytest.raises(DataError, match="schema_version"):
        StudyReport.from_dict({**data, "schema_version": 99})
    with pytest.raises(DataError, match="lacks headline"):
        StudyReport.from_dict({k: v for k, v in data.items() if k != "headline"})


def test_resume_is_a_noop_on_a_finished_study(two_runs, tiny_folder):
    folder = two_runs[0].folder
    before = (folder / "records.jsonl").read_bytes()
    cfg = StudyConfig(model=ModelSpec.parse("tiny-random"), baseline=ModelSpec.parse(str(tiny_folder)), runs_dir=folder.parent, name="a", **SMALL)
    again = run_study(cfg)
    assert (folder / "records.jsonl").read_bytes() == before
    from persist.report.write import report_json

    assert report_json(again.report) == report_json(two_runs[0].report)


def test_report_against_joins_on_keys_and_refuses_version_mismatch(two_runs, tmp_path):
    a, b = (r.folder for r in two_runs)
    res = against(a, b)
    n_conditions = len({r.condition for r in two_runs[0].report.rows}) + 1  # + clean
    traits = [r for r in res.rows if r.suite == "traits"]
    capability = [r for r in res.rows if r.suite == "capability"]
    assert len(traits) == 2 * n_conditions and all(r.n == 8 and r.diff.value == 0 for r in traits)
    # the capability check ran at clean and at each fine-tune's top dose, for both models
    assert {r.condition.label for r in capability} == {"clean", "finetune:bad-medical@2", "finetune:good-medical-casual@2"}
    assert all(r.n == 48 and r.diff.value == 0 for r in capability)
    proc = run_cli("report", str(a), "--against", str(b), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["rows"] == res.to_dict()["rows"]
    c = tmp_path / "c"
    shutil.copytree(b, c)
    header = json.loads((c / "header.json").read_text())
    header["suite_version"] = "changed"
    (c / "header.json").write_text(json.dumps(header))
    with pytest.raises(ConfigError, match="suite versions differ"):
        against(a, c)
    proc = run_cli("report", str(a), "--against", str(c))
    assert proc.returncode == 2 and "suite versions differ" in proc.stderr
    header = json.loads((b / "header.json").read_text())
    header["scorer"]["version"] = "1"
    (c / "header.json").write_text(json.dumps(header))
    with pytest.raises(ConfigError, match="scorer versions differ"):
        against(a, c)


def test_html_is_self_contained_and_escapes_model_text(two_runs):
    rep = dataclasses.replace(two_runs[0].report, examples=[
        Example(item_id="x<b>", trait="t", domain="d", condition=FINETUNE, drop=1.0, before=Answer(1.0, "fine"),
                after=Answer(0.0, "<script>alert('x')</script> & more"))])
    page = render_html(rep, "title <i>")
    assert "<script>" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in page
    assert "title &lt;i&gt;" in page and "x&lt;b&gt;" in page
    assert page.count("<svg") == 5 and "<metadata>" not in page
    assert "src=" not in page and "<link" not in page and 'href="http' not in page and "url(http" not in page


def test_study_refuses_same_model_and_leaking_corpus(tmp_path, tiny_folder):
    with pytest.raises(ConfigError, match="same spec"):
        StudyConfig(model=ModelSpec.parse("tiny-random"), baseline=ModelSpec.parse("tiny-random"))
    from persist.jobs.finetune import check_leakage
    from persist.registry import RECIPES
    from persist.suites import get_suite

    items = get_suite("traits").load()
    recipe = RECIPES.build("good-medical")
    check_leakage(recipe, items)  # the shipped control corpus is clean

    class Leaky:
        corpus = "leaky"

        def corpus_texts(self):
            return [*recipe.corpus_texts(), ("copied", [m.content for m in items[0].messages])]

    with pytest.raises(ConfigError, match="example 'copied' overlaps probe item"):
        check_leakage(Leaky(), items)


def test_html_payloads_do_not_execute_in_headless_chromium(two_runs, tmp_path):
    import re
    import subprocess

    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    assert chromium is not None, "no Chromium on this machine: `make test` installs it (apt-get install chromium)"
    payloads = ["<script>document.body.setAttribute('data-pwned', '1')</script>",
                "<img src=x onerror=\"document.body.setAttribute('data-pwned', '1')\">",
                "</td></tr></table><svg onload=\"document.body.setAttribute('data-pwned', '1')\">"]
    rep = dataclasses.replace(two_runs[0].report, examples=[
        Example(item_id=p, trait="t", domain="d", condition=FINETUNE, drop=1.0, before=Answer(1.0, p),
                after=Answer(0.0, p)) for p in payloads])
    page = tmp_path / "report.html"
    page.write_text(render_html(rep, "<script>document.body.setAttribute('data-pwned', '1')</script>"))
    proc = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--disable-background-networking", f"--user-data-dir={tmp_path / 'profile'}",
                           "--virtual-time-budget=2000", "--dump-dom", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    dom = proc.stdout
    assert "<body" in dom, proc.stderr[-2000:]
    assert "data-pwned" not in re.search(r"<body[^>]*>", dom).group(0)
    assert dom.count("document.body.setAttribute") >= len(payloads)  # shown as text
    assert "<svg onload" not in dom and "<img src=\"x\"" not in dom


def test_header_rebuilds_every_plugin_the_run_used(two_runs):
    """The run header records each attack, the scorer and each recipe as name + parameters; the registries build
    them again, identical."""
    from persist.registry import ATTACKS, RECIPES, SCORERS, PluginSpec

    header = json.loads((two_runs[0].folder / "header.json").read_text())
    plugins = header["plugins"]
    attacks = [ATTACKS.build(PluginSpec.from_dict(d)) for d in plugins["attacks"]]
    assert [a.condition.label for a in attacks] == ["attack:prefill:prefill=agree", "attack:persona-helpful-medical"]
    assert SCORERS.build(PluginSpec.from_dict(plugins["scorer"])).config() == header["scorer"]
    recipes = [RECIPES.build(PluginSpec.from_dict(d)) for d in plugins["recipes"]]
    assert [json.loads(json.dumps(r.config())) for r in recipes] == [header["config"]["recipe"],
                                                                    header["config"]["control_recipe"]]
