"""End-to-end CLI runs on the tiny model, as a user would type them."""

from __future__ import annotations

import json

from tests.conftest import run_cli


def test_score_writes_run_and_prints_table(tmp_path):
    env = {"PERSIST_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    r = run_cli("score", "--model", "tiny-random", "--limit", "48", "--runs-dir", str(tmp_path / "runs"),
                "--name", "s1", env=env)
    assert r.returncode == 0, r.stderr
    assert "truthfulness" in r.stdout and "health" in r.stdout, r.stdout  # per-trait and per-domain tables
    assert "[" in r.stdout and "]" in r.stdout  # with intervals
    folder = tmp_path / "runs" / "s1"
    header = json.loads((folder / "header.json").read_text())
    assert header["config"]["job"] == "score" and header["scorer"]["name"] == "likelihood"
    rows = [json.loads(x) for x in (folder / "records.jsonl").read_text().splitlines()]
    assert len(rows) == 48 and all(0 <= r["score"] <= 1 for r in rows)
    # running again resumes: nothing new is scored
    again = run_cli("score", "--model", "tiny-random", "--limit", "48", "--runs-dir", str(tmp_path / "runs"),
                    "--name", "s1", env=env)
    assert again.returncode == 0 and "0 newly scored" in again.stdout


def test_score_bad_inputs_exit_2_with_one_line(tmp_path):
    for args, needle in ((["--suite", "trait"], "traits"), (["--scorer", "likelyhood"], "likelihood"),
                         (["--limit", "0"], "limit"), (["--model", str(tmp_path / "missing")], "missing")):
        r = run_cli("score", "--model", "tiny-random", *args, "--runs-dir", str(tmp_path / "runs"))
        assert r.returncode == 2, (args, r.stderr)
        assert needle in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) <= 2, r.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_attack_prints_comparison(tmp_path):
    env = {"PERSIST_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    r = run_cli("attack", "--model", "tiny-random", "--baseline", "tiny-random", "--attacks",
                "prefill,persona-helpful-medical", "--limit", "8", "--runs-dir", str(tmp_path), env=env)
    assert r.returncode == 0, r.stderr
    assert "attack:prefill" in r.stdout and "attack:persona-helpful-medical (control)" in r.stdout
    assert "baseline" in r.stdout and "log-odds" in r.stdout
    report = json.loads(next(tmp_path.glob("*/report.json")).read_text())
    assert report["kind"] == "attack" and report["n_items"] == 8
