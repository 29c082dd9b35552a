"""Crash safety: SIGKILL at many points of a study and of a generation campaign, resume, and end where an
uninterrupted run ends — same report.json byte for byte, same records, nothing duplicated, lost or torn.

Kills come two ways: at random moments (wall-clock), and at exact moments through persist.failpoints
(PERSIST_FAILPOINT=NAME:N): half a batch of records on disk with a torn last line, a temporary report or header
written but not renamed, a fine-tune checkpoint saved but not moved into place, a training step.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def persist_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "persist", *args]


def run(cmd: list[str], env: dict[str, str], *, failpoint: str | None = None, kill_after: float | None = None
        ) -> int:
    """Run to the end, or until the failpoint fires, or SIGKILL it after `kill_after` seconds."""
    env = {**env, **({"PERSIST_FAILPOINT": failpoint} if failpoint else {})}
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=kill_after if kill_after is not None else 600)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
    assert proc.returncode in (0, -signal.SIGKILL), err[-3000:]
    return proc.returncode


def records(folder: Path) -> list[dict]:
    raw = (folder / "records.jsonl").read_text(encoding="utf-8")
    assert raw == "" or raw.endswith("\n"), "torn last line left in records.jsonl"
    return [json.loads(line) for line in raw.splitlines()]


def same_records(a: list[dict], b: list[dict]) -> None:
    keys_a = [(r["role"], r["key"]) for r in a]
    assert len(keys_a) == len(set(keys_a)), "duplicated records after resume"

    assert {(r["role"], r["key"]): r for r in a} == {(r["role"], r["key"]): r for r in b}


def no_leftovers(folder: Path) -> None:
    stale = [p for p in folder.rglob(".*") if p.name != ".persist-sha256.json"]  # that one is a real cache file
    assert not stale, f"temporary files left behind: {stale}"


def kill_and_resume(cmd: list[str], env: dict[str, str], plan: list[str | float], seed: int) -> int:
    kills = 0
    for step in plan:
        code = run(cmd, env, failpoint=step if isinstance(step, str) else None,
                   kill_after=step if isinstance(step, float) else None)
        kills += code == -signal.SIGKILL
    assert run(cmd, env) == 0, f"final resume failed (seed {seed})"
    return kills


@pytest.fixture()
def env(tmp_path) -> dict[str, str]:
    return {**os.environ, "PERSIST_HOME": str(tmp_path / "home"), "COLUMNS": "200"}


def test_study_survives_sigkill_anywhere(tmp_path, env):
    seed = int(os.environ.get("PERSIST_CRASH_SEED") or int.from_bytes(os.urandom(4), "little"))
    rng = random.Random(seed)
    from persist.tiny import tiny_model_folder

    baseline = tiny_model_folder(tmp_path / "baseline")  # the same weights as tiny-random, as a user's folder
    base = ["study", "--model", "tiny-random", "--baseline", str(baseline),
            "--attacks", "prefill:prefill=agree,persona-helpful-medical", "--doses", "0,2", "--limit", "8",
            "--runs-dir", str(tmp_path / "runs")]
    t0 = time.perf_counter()
    assert run(persist_cmd(*base, "--name", "ref"), env) == 0
    full = time.perf_counter() - t0
    # Exact moments in stage order (each resume skips what is done, so later ones are still reachable), with
    # random wall-clock kills between them.
    exact = ["write header.json:1", f"append:{rng.randint(1, 3)}", "append:1", "train-step:1", "checkpoint:1",
             "train-step:2", "checkpoint:1", "write report.json:1", "write report.md:1", "write report.html:1"]
    plan: list[str | float] = []
    for point in exact:
        plan.append(point)
        if rng.random() < 0.5:
            plan.append(rng.uniform(3.0, max(4.0, full / 3)))
    crash = persist_cmd(*base, "--name", "crash")
    kills = kill_and_resume(crash, env, plan, seed)
    assert kills >= 10, f"only {kills} kills landed (seed {seed}); plan {plan}"
    ref, got = tmp_path / "runs" / "ref", tmp_path / "runs" / "crash"
    assert (got / "report.json").read_bytes() == (ref / "report.json").read_bytes(), f"seed {seed}"
    same_records(records(got), records(ref))
    no_leftovers(got)
    for name in ("report.md", "report.html"):
        assert (got / name).stat().st_size > 0


def test_generation_campaign_survives_sigkill(tmp_path, env):
    seed = int(os.environ.get("PERSIST_CRASH_SEED") or int.from_bytes(os.urandom(4), "little"))
    rng = random.Random(seed)
    base = ["attack", "--model", "tiny-random", "--suite", "harmful-requests", "--scorer", "refusal",
            "--attacks", "refusal-suppression,prefill", "--limit", "12", "--max-new-tokens", "12",
            "--runs-dir", str(tmp_path / "runs")]
    assert run(persist_cmd(*base, "--name", "ref"), env) == 0
    plan: list[str | float] = ["append:1", rng.uniform(4.0, 8.0), "append:2", rng.uniform(4.0, 8.0),
                               "write report.json:1"]
    kills = kill_and_resume(persist_cmd(*base, "--name", "crash"), env, plan, seed)
    assert kills >= 3, f"only {kills} kills landed (seed {seed})"
    ref, got = tmp_path / "runs" / "ref", tmp_path / "runs" / "crash"
    same_records(records(got), records(ref))
    assert (got / "report.json").read_bytes() == (ref / "report.json").read_bytes(), f"seed {seed}"
    no_leftovers(got)


def test_ctrl_c_prints_the_resume_command(tmp_path, env):
    # Generation on every harmful request: long enough (tens of seconds) for the interrupt to land mid-run.
    cmd = persist_cmd("score", "--model", "tiny-random", "--suite", "harmful-requests", "--scorer", "refusal",
                      "--max-new-tokens", "96", "--runs-dir", str(tmp_path / "runs"),
                      "--name", "int")
    # A shell that starts jobs in the background (CI runners, nohup) leaves SIGINT *ignored*, and an ignored signal
    # stays ignored across exec: restore the default so the child behaves like a terminal user's process.
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    folder = tmp_path / "runs" / "int"
    deadline = time.time() + 120
    while not (folder / "header.json").exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0, "the run finished before the interrupt landed: give it more work"
    assert proc.returncode == 130, err
    assert "Resume with: persist score --model tiny-random --suite harmful-requests" in " ".join(err.split())


def test_study_with_seeds_resumes_after_a_kill_in_the_second_seeds_training(tmp_path, env):
    from persist.tiny import tiny_model_folder

    baseline = tiny_model_folder(tmp_path / "baseline")
    base = ["study", "--model", "tiny-random", "--baseline", str(baseline), "--attacks", "prefill:prefill=agree",
            "--doses", "0,2", "--limit", "8", "--seeds", "2", "--runs-dir", str(tmp_path / "runs")]
    assert run(persist_cmd(*base, "--name", "ref"), env) == 0
    # seed 0 trains 4 ladders of 2 steps (model and baseline, bad and good medical): step 9 is in seed 1
    crash = persist_cmd(*base, "--name", "crash")
    assert run(crash, env, failpoint="train-step:9") == -signal.SIGKILL
    assert not (tmp_path / "runs" / "crash" / "report.json").exists()
    assert (tmp_path / "runs" / "crash" / "adapters" / "model" / "good-medical-casual" / "step-00002").is_dir()
    assert run(crash, env) == 0
    ref, got = tmp_path / "runs" / "ref", tmp_path / "runs" / "crash"
    same_records(records(got), records(ref))
    assert (got / "report.json").read_bytes() == (ref / "report.json").read_bytes()
    no_leftovers(got)
