"""The floor plan: the core never imports a plugin; each core module imports only its own layer and those below
(inside functions too); the wheel carries its data and installs under persist.*; piped output keeps names whole;
files respect the umask."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli

PLUGINS = ("attacks", "probes", "finetune_attacks")


def plugin_imports(path: Path) -> list[str]:
    """Every import in a module that names a plugin package, under any spelling (absolute, persist.*, relative)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ["persist", *path.relative_to(ROOT / "persist").parts[:-1]]  # for resolving relative imports
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                names = [".".join([*base, node.module or ""]).rstrip(".")]
                names += [f"{names[0]}.{a.name}" for a in node.names]
            else:
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            names = [str(node.args[0].value)]
        for name in names:
            parts = name.split(".")
            if parts[0] in PLUGINS or (parts[0] == "persist" and len(parts) > 1 and parts[1] in PLUGINS):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    return found


def test_core_never_imports_a_plugin():
    modules = sorted((ROOT / "persist").rglob("*.py"))
    assert len(modules) > 20
    bad = [hit for m in modules for hit in plugin_imports(m)]
    assert not bad, "\n".join(bad)


def test_the_import_walk_catches_every_spelling(tmp_path, monkeypatch):
    """The walker itself: each spelling of a plugin import in a module under persist/ is caught."""
    spellings = ["import attacks", "from probes import judge", "import persist.attacks.base",
                 "from persist.finetune_attacks.lora import train", "from persist import probes",
                 "from .. import attacks", "importlib.import_module('persist.probes')"]
    fake_root = tmp_path
    (fake_root / "persist" / "sub").mkdir(parents=True)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", fake_root)
    for i, line in enumerate(spellings):
        f = fake_root / "persist" / "sub" / f"m{i}.py"
        f.write_text(f"def f():\n    {line}\n")
        assert plugin_imports(f), line
    ok = fake_root / "persist" / "sub" / "ok.py"
    ok.write_text("from persist.registry import ATTACKS\nimport persist.plugins\n")
    assert not plugin_imports(ok)


# The core's layers, lowest first. A module may import its own layer and those below it, never one above, at module
# level or inside a function: so no import cycle can cross a layer, and no function-level import hides one.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("persist", "persist.errors", "persist.schema", "persist.jsonl", "persist.failpoints", "persist.folders")),
    ("weights", ("persist.models", "persist.bundled", "persist.garak_data", "persist.tiny")),
    ("targets", ("persist.targets",)),
    ("run machinery", ("persist.api", "persist.registry", "persist.plugins", "persist.conditions", "persist.suites",
                       "persist.register", "persist.store", "persist.runner", "persist.stats", "persist.scoring",
                       "persist.prepared", "persist.capability", "persist.correction", "persist.behaviour",
                       "persist.timings")),
    ("report", ("persist.report",)),
    ("jobs", ("persist.jobs",)),
    ("cli", ("persist.commands", "persist.cli_options", "persist.cli_runs", "persist.__main__", "persist.cli")),
)


def layer_of(module: str) -> int | None:
    """The layer of a dotted module name: its longest matching prefix (None outside persist's core)."""
    best: tuple[int, int] | None = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > best[1]):
                best = (i, len(p))
    return None if best is None else best[0]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, dotted name) of every persist import in a module, anywhere in it, relative imports resolved; for
    `from a import b` both `a` and `a.b` (b may be a submodule)."""
    me = module_name(path, root)
    package = me.split(".") if path.name == "__init__.py" else me.split(".")[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            out += [(node.lineno, base)] + [(node.lineno, f"{base}.{a.name}") for a in node.names]
    return [(line, name) for line, name in out if name == "persist" or name.startswith("persist.")]


def layer_violations(root: Path) -> list[str]:
    bad = []
    for path in sorted((root / "persist").rglob("*.py")):
        me = module_name(path, root)
        mine = layer_of(me)
        if mine is None:
            bad.append(f"{path.relative_to(root)}: {me} is in no layer (add it to LAYERS)")
            continue
        for line, name in imported_modules(path, root):
            theirs = layer_of(name)
            if theirs is not None and theirs > mine:
                bad.append(f"{path.relative_to(root)}:{line}: {me} ({LAYERS[mine][0]}) imports {name} "
                           f"({LAYERS[theirs][0]})")
    return bad


def test_every_core_import_respects_the_layer_order():
    bad = layer_violations(ROOT)
    assert not bad, "\n".join(bad)


def test_the_layer_walk_catches_an_upward_import(tmp_path):
    """The walker itself: an import of a higher layer is caught at module level, inside a function and relative."""
    (tmp_path / "persist" / "report").mkdir(parents=True)
    (tmp_path / "persist" / "jobs").mkdir(parents=True)
    for i, line in enumerate(["from persist.jobs.study import run_study", "import persist.jobs.attack",
                              "from ..jobs import study"]):
        (tmp_path / "persist" / "report" / f"m{i}.py").write_text(f"def f():\n    {line}\n")
    (tmp_path / "persist" / "report" / "ok.py").write_text("from persist.stats import mean_ci\n")
    bad = layer_violations(tmp_path)
    assert len({b.split(":")[0] for b in bad}) == 3 and not any("ok.py" in b for b in bad), bad


def test_importing_persist_loads_no_plugin():
    code = ("import sys, persist, persist.jobs.study, persist.jobs.attack, persist.report.html\n"
            "print([m for m in sys.modules if m.split('.')[:2] in (['persist','attacks'], ['persist','probes'],"
            " ['persist','finetune_attacks']) or m.split('.')[0] in ('attacks', 'probes', 'finetune_attacks')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT / "tests")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


def test_plugins_come_from_entry_points():
    from persist import plugins
    from persist.registry import ATTACKS, RECIPES, SCORERS, SUITES

    assert plugins.load() == ["persist.attacks", "persist.finetune_attacks", "persist.probes"]
    assert {"traits", "harmful-requests"} <= set(SUITES.names()) and "likelihood" in SCORERS
    assert "many-shot" in ATTACKS and "bad-medical" in RECIPES


def test_piped_lists_keep_names_whole_and_speak_json():
    from persist.registry import ATTACKS, RECIPES

    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    for args, names in ((["attacks", "list"], ATTACKS.names()), (["finetune-attack", "--list"], RECIPES.names())):
        r = subprocess.run([sys.executable, "-m", "persist", *args], capture_output=True, text=True, env=env,
                           cwd=ROOT)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        for name in names:
            assert any(f" {name} " in line for line in lines), (name, r.stdout)
        r = subprocess.run([sys.executable, "-m", "persist", *args, "--format", "json"], capture_output=True,
                           text=True, env=env, cwd=ROOT)
        assert r.returncode == 0, r.stderr
        assert sorted(row["name"] for row in json.loads(r.stdout)) == sorted(names)


def test_reports_and_headers_respect_the_umask(tmp_path, tiny_folder):
    old = os.umask(0o022)
    try:
        from persist.store import atomic_write_text

        atomic_write_text(tmp_path / "report.json", "{}\n")
        assert (tmp_path / "report.json").stat().st_mode & 0o777 == 0o644
        os.umask(0o027)
        atomic_write_text(tmp_path / "report.md", "x\n")
        assert (tmp_path / "report.md").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)
    r = run_cli("score", "--model", str(tiny_folder), "--limit", "2", "--runs-dir", str(tmp_path / "runs"),
                "--name", "u", env={"PERSIST_HOME": str(tmp_path / "home")})
    assert r.returncode == 0, r.stderr
    for name in ("header.json", "records.jsonl"):
        assert (tmp_path / "runs" / "u" / name).stat().st_mode & 0o777 == 0o666 & ~old, name


@pytest.mark.slow
def test_wheel_installs_under_persist_and_carries_its_data(tmp_path):
    """Build the wheel, install it with --no-deps into a throwaway venv that sees the project's packages, and run
    the refusal scorer (its default classifier reads shipped weights) from the installed copy."""
    import shutil
    import sysconfig
    import zipfile

    # Build from a copy of the source: an in-tree build/ folder can hold files from an older build.
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv*", ".git", "runs", "build", "*.egg-info",
                                                             "__pycache__", ".pytest_cache", ".ruff_cache"))
    dist = tmp_path / "dist"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(dist), str(src)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next(dist.glob("persist-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.startswith("persist-")}
    assert top == {"persist"}, top
    for needed in ("persist/cli/__init__.py", "persist/__main__.py", "persist/probes/data/refusal_classifier.safetensors",
                   "persist/probes/data/traits.jsonl", "persist/finetune_attacks/data/bad_medical.jsonl",
                   "persist/attacks/data/manyshot_pool.jsonl", "persist/adapters/smollm2-135m-beneficial/"
                   "adapter_model.safetensors"):
        assert needed in names, needed
    data_read = sorted(str(p.relative_to(ROOT)) for d in ("probes", "attacks", "finetune_attacks")
                       for p in (ROOT / d / "data").glob("*") if p.suffix in (".jsonl", ".json", ".safetensors"))
    mapped = {f"persist/{p}" for p in data_read}
    assert mapped <= set(names), sorted(mapped - set(names))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = subprocess.run([str(venv / "bin/python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # The project venv's packages, as a plain path (its .pth files, such as the editable persist, are not run).
    Path(site, "project-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    inst = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin/python"), "install", "-q",
                           "--no-deps", str(wheel)], capture_output=True, text=True)
    assert inst.returncode == 0, inst.stderr[-3000:]
    show = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin/python"), "show", "-f",
                           "persist"], capture_output=True, text=True, check=True).stdout
    files = [ln.strip() for ln in show.split("Files:", 1)[1].splitlines() if ln.strip()]
    assert files and all(f.startswith(("persist/", "persist-", "../")) for f in files), files
    env = {**os.environ, "PERSIST_HOME": os.environ.get("PERSIST_HOME", str(Path.home() / ".cache/persist"))}
    run = subprocess.run([str(venv / "bin/persist"), "score", "--suite", "harmful-requests", "--scorer", "refusal",
                          "--limit", "4", "--runs-dir", str(tmp_path / "runs"), "--name", "w"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    header = json.loads((tmp_path / "runs" / "w" / "header.json").read_text())
    assert header["scorer"]["classifier"] == "learned" and header["scorer"]["classifier_sha256"]
    assert str(venv) in subprocess.run([str(venv / "bin/python"), "-c", "import persist.probes.refusal_model as m; "
                                        "print(m.WEIGHTS)"], capture_output=True, text=True, cwd=tmp_path).stdout


@pytest.mark.parametrize("command", ["score", "attack", "finetune-attack", "study", "generate"])
def test_every_model_loading_command_has_the_same_loading_flags(command):
    from typer.testing import CliRunner

    from persist.cli import app

    out = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "300"}).output
    for flag in ("--device", "--dtype", "--load-in-4bit", "--allow-pickle", "--trust-remote-code"):
        assert flag in out, (command, flag)


def test_vllm_tests_are_deselected_unless_switched_on_and_refused_without_vllm():
    """No skip: a vLLM test is deselected by default, and switched on where vLLM is absent it stops the session."""
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--co", "tests/test_cuda.py"]
    env = {k: v for k, v in os.environ.items() if k not in ("PERSIST_CUDA_TESTS", "PERSIST_VLLM_TESTS")}
    off = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert off.returncode == 5 and "deselected" in off.stdout, off.stdout  # 5: nothing collected, nothing skipped
    on = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env={**env, "PERSIST_VLLM_TESTS": "1"},
                        timeout=300)
    assert on.returncode == 4 and "PERSIST_VLLM_TESTS=1, but vllm is not installed" in on.stderr + on.stdout
