"""bench/ at a tiny size: every kept script and tool runs its persist side in this process (--tiny: the tiny random
model, a handful of items; bench/tiny.py), so a moved import or a changed API fails here, not in the next real run.

Peers (lm-eval, TRL, garak's generator) live in .venv-bench and are not run here: --tiny leaves them out. Their
child code is still checked for imports of persist that no longer resolve, with every other import of every script.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

BENCH = ROOT / "bench"
MOVED_OUT = [ROOT / "probes" / "refusal_answers.py"]  # moved out of bench/, run here as persist.probes.*
HELPERS = {"bench/tiny.py"}  # imported by the scripts' --tiny modes, not run on its own
# Every script and the test that runs it. A new script in bench/ fails test_every_script_has_a_smoke_run until it
# is added here (and given a --tiny mode).
RUN_BY = {
    **{f"bench/peers/{s}.py": "test_run_all_tiny" for s in
       ("run_all", "scoring", "generation", "roofline", "where_time_goes", "finetune", "engines", "cost")},
    "bench/experiments/suffix_leverage.py": "test_script_tiny",
    "bench/experiments/refusal_readers.py": "test_script_tiny",
    "bench/experiments/refusal_finetuned_reader.py": "test_script_tiny",
    "bench/experiments/determinism_probe.py": "test_determinism_probe_tiny",
    "bench/experiments/stats_calibration.py": "test_script_tiny",
    "bench/experiments/calibration.py": "test_script_tiny",
    "bench/experiments/null_studies.py": "test_script_tiny",
    "bench/experiments/behaviour_validation.py": "test_script_tiny",
    "bench/experiments/refusal_heldout.py": "test_script_tiny",
    "bench/experiments/score_versions.py": "test_score_versions_on_hand_built_records",
    "bench/tools/targets.py": "test_script_tiny",
    "bench/tools/refusal.py": "test_script_tiny",
    "bench/tools/throughput.py": "test_script_tiny",
    "bench/tools/compare_loglik.py": "test_compare_loglik_on_hand_built_runs",
    "bench/tools/gpu_check.sh": "test_gpu_check_parses_and_names_only_existing_files",
}


def scripts() -> list[Path]:
    return sorted(p for p in BENCH.rglob("*") if p.suffix in (".py", ".sh") and p.name != "__init__.py"
                  and "__pycache__" not in p.parts)


def module_of(path: Path) -> str:
    if path in MOVED_OUT:
        return f"persist.probes.{path.stem}"
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


@pytest.fixture(scope="module", autouse=True)
def home(tmp_path_factory):
    """One PERSIST_HOME for the module: the tiny random model is written there once."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PERSIST_HOME", str(tmp_path_factory.mktemp("home")))
        yield


def test_every_script_has_a_smoke_run():
    found = {str(p.relative_to(ROOT)) for p in scripts()} - HELPERS
    assert found == set(RUN_BY), f"not run here: {sorted(found - set(RUN_BY))}; gone: {sorted(set(RUN_BY) - found)}"
    tests = {name for name in globals() if name.startswith("test_")}
    assert set(RUN_BY.values()) <= tests


# ---------------------------------------------------------------- imports, including the peers' child code


def import_statements(path: Path, root: Path = ROOT) -> list[tuple[str, ast.stmt]]:
    """(where, statement) for every import in the file, and in every string constant of it that is Python code
    (the child processes' scripts, e.g. the TRL and garak sides, which --tiny does not run)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    trees = [("", tree)]
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "import " in node.value:
            try:
                trees.append((f" (child code at line {node.lineno})", ast.parse(node.value)))
            except SyntaxError:
                continue
    return [(f"{path.relative_to(root)}:{stmt.lineno}{where}", stmt) for where, t in trees for stmt in ast.walk(t)
            if isinstance(stmt, (ast.Import, ast.ImportFrom))]


def ours(module: str) -> bool:
    return module.split(".")[0] in ("persist", "bench")


def unresolved(where: str, stmt: ast.stmt) -> list[str]:
    bad = []
    if isinstance(stmt, ast.Import):
        pairs = [(a.name, None) for a in stmt.names if ours(a.name)]
    else:
        pairs = [(stmt.module, a.name) for a in stmt.names] if stmt.module and ours(stmt.module) else []
    for module, name in pairs:
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            bad.append(f"{where}: {module}: {exc}")
            continue
        if name is not None and not hasattr(mod, name):
            try:
                importlib.import_module(f"{module}.{name}")
            except ImportError:
                bad.append(f"{where}: {module} has no {name}")
    return bad


def test_every_import_of_persist_and_bench_resolves():
    files = [p for p in scripts() if p.suffix == ".py"] + MOVED_OUT
    statements = [s for f in files for s in import_statements(f)]
    assert any("child code" in where for where, _ in statements)  # the peers' child scripts are read too
    bad = [msg for where, stmt in statements for msg in unresolved(where, stmt)]
    assert not bad, "\n".join(bad)


def test_the_import_check_catches_a_moved_name(tmp_path):
    f = tmp_path / "old.py"
    f.write_text('from persist.probes.suites import get_suite\nCHILD = """\nfrom persist.models import nothing_here\n"""\n')
    bad = [m for where, stmt in import_statements(f, tmp_path) for m in unresolved(where, stmt)]
    assert len(bad) == 2 and "child code" in bad[1], bad


# ---------------------------------------------------------------- the scripts, run in this process


def run_main(module: str, argv: list[str]) -> None:
    assert importlib.import_module(module).main(argv) == 0


@pytest.mark.parametrize("module,argv", [
    ("bench.tools.targets", ["--tiny"]),
    ("bench.tools.refusal", ["--tiny"]),
    ("bench.tools.throughput", ["--tiny", "--cpu-row"]),
    ("bench.experiments.suffix_leverage", ["--tiny"]),
    ("bench.experiments.suffix_leverage", ["--tiny", "--instructions"]),
    ("bench.experiments.refusal_readers", ["--tiny"]),
    ("bench.experiments.refusal_finetuned_reader", ["--tiny"]),
    ("bench.experiments.stats_calibration", ["--tiny"]),
    ("bench.experiments.calibration", ["--tiny", "--workers", "1"]),
    ("bench.experiments.null_studies", ["--tiny"]),
    ("bench.experiments.behaviour_validation", ["--tiny"]),
    ("bench.experiments.refusal_heldout", ["--tiny"]),
])
def test_script_tiny(module, argv, capsys):
    run_main(module, argv)
    assert capsys.readouterr().out.strip()


def test_run_all_tiny(tmp_path):
    """Every peer script's persist side through run_all, then the same rendering as BENCHMARKS.md's."""
    out, results = tmp_path / "B.md", tmp_path / "results.json"
    run_main("bench.peers.run_all", ["--tiny", "--out", str(out), "--results", str(results)])
    got = json.loads(results.read_text())
    assert set(got["figures"]) == {"scoring", "scoring_bf16", "generation", "generation_bf16", "roofline", "profile",
                                   "finetune", "engines", "cost"}
    assert got["figures"]["engines"]["engines"]["llamacpp"]["new_tokens"] > 0  # --engine llamacpp generated
    pilot, check = got["figures"]["cost"]["designs"]
    assert pilot["pilot"] and pilot["run_s"] > 0 and check["predicted_s"] > 0 and check["units"]["new_tokens"] > 0
    assert all("--tiny" in c and "bench/peers/" in c for c in got["commands"].values())
    text = out.read_text()
    assert "| Scoring (likelihood, fp32) |" in text and "lm-eval hf: -" in text  # the peer's column left empty
    assert "**scoring float32**" in text
    assert "## How a study's wall time grows" in text and "| 6 x 2 |" in text
    # --only reruns one job and keeps every other job's figures
    run_main("bench.peers.run_all", ["--tiny", "--only", "roofline", "--out", str(out), "--results", str(results)])
    again = json.loads(results.read_text())
    assert again["figures"]["cost"] == got["figures"]["cost"] and set(again["figures"]) == set(got["figures"])
    assert again["dates"]["roofline"] >= got["dates"]["roofline"] and again["written"] == got["written"]


def test_determinism_probe_tiny(tmp_path):
    run_main("bench.experiments.determinism_probe", ["--tiny", "after-score", str(tmp_path)])
    assert list((tmp_path / "b").glob("step-00002/adapter_model.safetensors"))


def test_refusal_answers_tiny(tmp_path):
    """probes/refusal_answers.py (moved out of bench/): its rows, as the classifier's real-answer set reads them."""
    out = tmp_path / "answers.jsonl"
    run_main("persist.probes.refusal_answers", ["--tiny", str(out)])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 + 4 * 3 and sum(r["split"] == "heldout" for r in rows) == 2 + 2 * 3
    assert {"item_id", "condition", "request_sha256", "answer", "should_refuse"} <= set(rows[0])


def hand_built_run(folder: Path, records: list[dict]) -> Path:
    folder.mkdir(parents=True)
    (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def test_compare_loglik_on_hand_built_runs(tmp_path, capsys):
    def recs(shift: float) -> list[dict]:
        return [{"role": "model", "key": f"k{i}", "score": 0.6,
                 "details": {"logp_aligned": [-10.0 - shift], "logp_misaligned": [-12.0], "logodds": 2.0,
                             "ref_bytes": 40}} for i in range(3)]

    a, b = hand_built_run(tmp_path / "a", recs(0)), hand_built_run(tmp_path / "b", recs(0.1))
    from bench.tools import compare_loglik

    assert compare_loglik.main([str(a), str(b), "--brief"]) == 0
    assert "3/3 same side" in capsys.readouterr().out
    assert compare_loglik.main([str(a), str(hand_built_run(tmp_path / "c", recs(1.0)))]) == 1


def test_score_versions_on_hand_built_records(tmp_path, capsys):
    recs = [{"role": "model", "condition": cond, "item_id": f"i{i}", "suite": "traits", "score": 0.5,
             "details": {"logodds": 1.0 + 0.1 * i - (0.5 if cond == "prefill" else 0)}}
            for cond in ("clean", "prefill") for i in range(8)]
    run_main("bench.experiments.score_versions", [str(hand_built_run(tmp_path / "run", recs))])
    out = capsys.readouterr().out
    assert "| model | prefill | 8 |" in out and "paired shift" in out


# ---------------------------------------------------------------- BENCHMARKS.md, gpu_check.sh, make bench


def test_benchmarks_md_is_the_rendering_of_results_json():
    from bench.peers import run_all

    results = json.loads(run_all.RESULTS.read_text(encoding="utf-8"))
    text = (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")
    assert run_all.render(results) == text, "BENCHMARKS.md is not run_all's rendering: bench/peers/run_all.py --render"
    assert len(text.splitlines()) < 150


def test_gpu_check_parses_and_names_only_existing_files(tmp_path):
    script = BENCH / "tools" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    root = re.search(r'cd "\$\(dirname "\$0"\)/([./]+)"', text)
    assert root and (script.parent / root[1]).resolve() == ROOT, "gpu_check.sh must cd to the repository root"
    paths = set(re.findall(r"\b(?:bench|tests|persist|probes|attacks|finetune_attacks)/[\w./-]+\.(?:py|sh)\b", text))
    assert "bench/tools/compare_loglik.py" in paths
    assert not [p for p in paths if not (ROOT / p).is_file()], paths
    modules = set(re.findall(r"-m (persist[\w.]+)", text))
    assert modules and all(importlib.util.find_spec(m) for m in modules), modules
    # No CUDA (an nvidia-smi that finds no GPU first on PATH): skipped, with the command to run on a GPU machine.
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\nexit 9\n")
    fake.chmod(0o755)
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": f"{tmp_path}:/usr/bin:/bin"})
    assert proc.returncode == 0 and proc.stdout.splitlines()[0] == "no CUDA device: skipped", proc.stdout
    assert "bash bench/tools/gpu_check.sh" in proc.stdout


def test_make_bench_runs_run_all():
    target = re.search(r"^bench:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M)
    assert target and "bench/peers/run_all.py" in target[1]
    assert (ROOT / "bench" / "peers" / "run_all.py").is_file()
