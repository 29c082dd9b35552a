"""One command line: plugins add command groups through the `persist.commands` entry-point group, and the accelerate
launcher parses the same flags as `persist finetune-attack` with the same parser."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

DUMMY = '''
import typer

app = typer.Typer(help="A third-party plugin's commands.")


@app.command("hello")
def hello(name: str = typer.Option("world", help="Who to greet.")) -> None:
    """Say hello."""
    from persist.registry import ATTACKS

    typer.echo(f"hello {name}; {len(ATTACKS)} attacks registered")
'''


def dummy_distribution(root: Path) -> Path:
    """A distribution installed on sys.path as a plain folder: its module and its dist-info with entry points."""
    (root / "dummy_persist_plugin.py").write_text(DUMMY)
    info = root / "dummy_persist_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dummy-persist-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[persist.commands]\ngreet = dummy_persist_plugin:app\n")
    return root


def run_persist(*args: str, extra_path: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(extra_path), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run([sys.executable, "-m", "persist", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)


def test_a_plugin_adds_a_command_group_through_the_entry_point(tmp_path):
    root = dummy_distribution(tmp_path)
    out = run_persist("greet", "hello", "--name", "tester", extra_path=root)
    assert out.returncode == 0, out.stderr
    # the plugins were loaded by the one app's callback before the plugin's command ran
    assert out.stdout.startswith("hello tester; ") and int(out.stdout.split("; ")[1].split()[0]) > 5, out.stdout
    listed = run_persist("--help", extra_path=root)
    assert "greet" in listed.stdout and "A third-party plugin's commands." in listed.stdout
    without = run_persist("greet", "hello")
    assert without.returncode == 2 and "greet" in without.stderr


def test_a_broken_command_entry_point_fails_loudly_by_name(tmp_path):
    root = dummy_distribution(tmp_path)
    (root / "dummy_persist_plugin-0.1.dist-info" / "entry_points.txt").write_text(
        "[persist.commands]\ngreet = dummy_persist_plugin:hello\n")
    out = run_persist("--help", extra_path=root)
    assert out.returncode == 1 and "Traceback" in out.stderr  # a broken plugin is a bug: a traceback, not a line
    assert "TypeError: entry point greet = 'dummy_persist_plugin:hello'" in out.stderr and "not a Typer app" in out.stderr


def test_the_accelerate_launcher_shares_finetune_attacks_flags():
    import typer.main

    from persist.cli import app
    from persist.finetune_attacks.launch import app as launcher

    group = typer.main.get_command(app)
    ours = {p.name: p for p in group.commands["finetune-attack"].params}  # type: ignore[attr-defined]
    theirs = {p.name: p for p in typer.main.get_command(launcher).params}
    shared = ("model", "recipe", "doses", "learning_rate", "batch_size", "seed", "load_in_4bit")
    for name in shared:
        assert name in ours and name in theirs, name
        assert ours[name].opts == theirs[name].opts, name
    for name in ("model", "recipe", "doses", "learning_rate", "batch_size", "seed"):
        assert ours[name].help == theirs[name].help, name  # declared once, in persist.commands.options


def test_the_launcher_refuses_bad_doses_in_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "persist.finetune_attacks.launch", "--out", str(tmp_path / "o"),
                          "--doses", "5,x"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().count("\n") == 0 and "--doses '5,x'" in out.stderr
    assert not (tmp_path / "o").exists()


def test_every_job_command_takes_the_run_flags_declared_once():
    import typer.main

    from persist.cli import app
    from persist.commands.options import RUN_FLAGS

    group = typer.main.get_command(app)
    helps = {}
    for command in ("score", "attack", "finetune-attack", "study"):
        params = {p.name: p for p in group.commands[command].params}  # type: ignore[attr-defined]
        for flag in RUN_FLAGS:
            assert flag in params, (command, flag)
            helps.setdefault(flag, set()).add(params[flag].help)
    assert all(len(h) == 1 for h in helps.values()), helps  # one declaration, one help text
