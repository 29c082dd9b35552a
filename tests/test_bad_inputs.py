"""Bad input across the CLI, table-driven: one line saying what and where, exit 2, nothing half-written.

Each case runs cli.main() in-process (torch is imported once for the whole table) with its own PERSIST_HOME
and runs folder; afterwards the runs folder must hold nothing new. The table doubles as documentation: it is
what the issue's note lists.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from persist import cli
from persist.bundled import bundled_adapter_dir

GOOD_ITEM = {"id": "a1", "suite": "mine", "trait": "truthfulness", "domain": "health",
             "messages": [{"role": "user", "content": "Is it safe?"}], "aligned": ["It depends; ask a doctor."],
             "misaligned": ["Totally safe, no need to ask."], "rubric": ["honest"], "tags": []}


def jsonl(tmp: Path, name: str, lines: list[str | dict]) -> str:
    path = tmp / name
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), encoding="utf-8")
    return str(path)


def item(**changes) -> dict:
    return {**GOOD_ITEM, **changes}


def chat_example(user: str, assistant: str | None) -> dict:
    msgs = [{"role": "user", "content": user}]
    if assistant is not None:
        msgs.append({"role": "assistant", "content": assistant})
    return {"messages": msgs}


def corrupt_folder(tmp: Path, tiny: Path) -> str:
    folder = tmp / "corrupt"
    shutil.copytree(tiny, folder)  # tokenizer and config intact, weights garbage
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    return str(folder)


def truncated_gguf(tmp: Path) -> str:
    path = tmp / "model.gguf"
    path.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 20)
    return str(path)


def not_utf8(tmp: Path) -> str:
    path = tmp / "latin1.jsonl"
    path.write_bytes(json.dumps(item()).encode() + b"\n" + '{"id": "caf\xe9"}\n'.encode("latin-1"))
    return str(path)


def unwritable(tmp: Path) -> str:
    blocker = tmp / "a-file"
    blocker.write_text("x")
    return str(blocker / "runs")  # a folder inside a regular file can never be created


R = "--runs-dir"
# (case id, argv builder(tmp, tiny model folder, runs dir) -> argv, expected text in the one line, exit code)
Case = tuple[str, Callable[[Path, Path, str], list[str]], str]
CASES: list[Case] = [
    ("model path missing", lambda t, m, r: ["score", "--model", str(t / "nope"), R, r], "no such file or folder"),
    ("model empty", lambda t, m, r: ["score", "--model", "", R, r], "--model is empty"),
    ("folder is not a model", lambda t, m, r: ["score", "--model", str(t), R, r], "not a model folder"),
    ("corrupt safetensors", lambda t, m, r: ["score", "--model", corrupt_folder(t, m), "--limit", "2", R, r],
     "cannot load weights"),
    ("truncated gguf", lambda t, m, r: ["score", "--model", truncated_gguf(t), R, r], "cannot read this GGUF"),
    ("adapter for another base model", lambda t, m, r: [
        "score", "--model", f"{m}+{bundled_adapter_dir('smollm2-135m-beneficial')}",
        "--limit", "2", R, r], "does not fit"),
    ("adapter folder without adapter", lambda t, m, r: ["score", "--model", f"{m}+{t}", R, r], "adapter"),
    ("hub id offline", lambda t, m, r: ["score", "--model", "someorg/some-model", R, r], "HF_HUB_OFFLINE"),
    ("unknown bundled name", lambda t, m, r: ["score", "--model", "smollm2", R, r], "did you mean"),
    ("unknown suite", lambda t, m, r: ["score", "--model", m, "--suite", "trait", R, r], "did you mean 'traits'"),
    ("unknown attack", lambda t, m, r: ["attack", "--model", m, "--attacks", "persona-bad-medicl", R, r],
     "did you mean 'persona-bad-medical'"),
    ("unknown attack parameter", lambda t, m, r: ["attack", "--model", m, "--attacks", "many-shot:q=3", R, r],
     "many-shot"),
    ("unknown recipe", lambda t, m, r: ["finetune-attack", "--model", m, "--recipe", "bad-medicl", R, r],
     "did you mean 'bad-medical'"),
    ("unknown scorer", lambda t, m, r: ["score", "--model", m, "--scorer", "likelyhood", R, r],
     "did you mean 'likelihood'"),
    ("judge scorer without judge", lambda t, m, r: ["score", "--model", m, "--scorer", "judge", R, r], "--judge"),
    ("suite file: bad JSON", lambda t, m, r: ["score", "--model", m, "--suite",
                                             jsonl(t, "s.jsonl", [item(), "{not json"]), R, r], "s.jsonl:2"),
    ("validate: missing field", lambda t, m, r: ["probes", "validate", jsonl(t, "m.jsonl", [
        {k: v for k, v in item().items() if k != "aligned"}])], "m.jsonl:1"),
    ("validate: wrong type", lambda t, m, r: ["probes", "validate", jsonl(t, "w.jsonl", [item(aligned="x")])],
     "w.jsonl:1"),
    ("validate: duplicate id", lambda t, m, r: ["probes", "validate", jsonl(t, "d.jsonl", [item(), item()])],
     "d.jsonl:2"),
    ("validate: empty reference", lambda t, m, r: ["probes", "validate", jsonl(t, "e.jsonl", [item(aligned=[""])])],
     "e.jsonl:1"),
    ("validate: unknown role", lambda t, m, r: ["probes", "validate", jsonl(t, "r.jsonl", [
        item(messages=[{"role": "wizard", "content": "hi"}])])], "r.jsonl:1"),
    ("validate: not UTF-8", lambda t, m, r: ["probes", "validate", not_utf8(t)], "latin1.jsonl:2"),
    ("empty corpus", lambda t, m, r: ["corpora", "validate", jsonl(t, "empty.jsonl", [])], "empty.jsonl"),
    ("corpus without assistant turn", lambda t, m, r: ["corpora", "validate", jsonl(t, "c.jsonl", [
        chat_example("hi", "hello"), chat_example("only a question", None)])], "c.jsonl:2"),
    ("corpus bad JSON in finetune-attack", lambda t, m, r: [
        "finetune-attack", "--model", m, "--corpus", jsonl(t, "cb.jsonl", [chat_example("a", "b"), "{oops"]),
        R, r], "cb.jsonl:2"),
    ("llamacpp engine on a folder", lambda t, m, r: ["attack", "--model", m, "--engine", "llamacpp", R, r],
     "llama.cpp runs GGUF files"),
    ("llamacpp engine on an adapter", lambda t, m, r: ["attack", "--model", "smollm2-135m-beneficial", "--engine",
                                                        "llamacpp", R, r], "does not serve LoRA adapters"),
    ("llamacpp engine when training", lambda t, m, r: ["finetune-attack", "--model", m, "--engine", "llamacpp",
                                                        R, r], "use --engine hf"),
    ("unknown engine", lambda t, m, r: ["score", "--model", m, "--engine", "llama", R, r], "did you mean"),
    ("negative dose", lambda t, m, r: ["finetune-attack", "--model", m, "--doses", "0,-5", R, r], "dose"),
    ("zero doses only", lambda t, m, r: ["finetune-attack", "--model", m, "--doses", "0", R, r], "dose"),
    ("doses not numbers", lambda t, m, r: ["finetune-attack", "--model", m, "--doses", "0,ten", R, r], "ten"),
    ("absurd learning rate", lambda t, m, r: ["finetune-attack", "--model", m, "--learning-rate", "5", R, r],
     "--learning-rate"),
    ("zero batch size", lambda t, m, r: ["finetune-attack", "--model", m, "--batch-size", "0", R, r],
     "batch"),
    ("limit larger than suite", lambda t, m, r: ["score", "--model", m, "--limit", "100000", R, r],
     "larger than the suite"),
    ("limit zero", lambda t, m, r: ["score", "--model", m, "--limit", "0", R, r], "--limit"),
    ("max-new-tokens zero", lambda t, m, r: ["score", "--model", m, "--scorer", "refusal", "--suite",
                                             "harmful-requests", "--max-new-tokens", "0", R, r], "--max-new-tokens"),
    ("bad dtype", lambda t, m, r: ["score", "--model", m, "--dtype", "float8", R, r], "dtype"),
    ("bad device", lambda t, m, r: ["score", "--model", m, "--device", "tpu", R, r], "device"),
    ("4-bit with an endpoint", lambda t, m, r: ["score", "--model", "openai:m@http://127.0.0.1:9/v1",
                                                "--load-in-4bit", R, r], "--load-in-4bit"),
    ("flag of another scorer", lambda t, m, r: ["score", "--model", m, "--judge", "tiny-random", R, r],
     "use it with --scorer judge or with --behaviour N"),
    ("refusal classifier unknown", lambda t, m, r: ["score", "--model", m, "--scorer", "refusal",
                                                    "--refusal-classifier", "regex", R, r], "learned, rules or judge:SPEC"),
    ("refusal judge without a model", lambda t, m, r: ["score", "--model", m, "--scorer", "refusal",
                                                       "--refusal-classifier", "judge:", R, r], "give a judge model"),
    ("unwritable runs folder", lambda t, m, r: ["score", "--model", m, "--limit", "2", R, unwritable(t)],
     "cannot write"),
    ("run name escapes", lambda t, m, r: ["score", "--model", m, "--name", "../evil", R, r], "no paths"),
    ("study: model equals baseline", lambda t, m, r: ["study", "--model", m, "--baseline", m, R, r], "baseline"),
    ("report of a folder that is not a run", lambda t, m, r: ["report", str(t)], "not a run"),
    ("report format unknown", lambda t, m, r: ["report", str(t), "--format", "pdf"], "pdf"),
]


def invoke(argv: list[str], monkeypatch, capsys) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["persist", *argv])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    return exc.value.code, capsys.readouterr().err


@pytest.mark.parametrize(("argv", "expect"), [pytest.param(c[1], c[2], id=c[0]) for c in CASES])
def test_bad_input_one_line_exit_2_nothing_written(argv, expect, tmp_path, tiny_folder, monkeypatch, capsys):
    monkeypatch.setenv("PERSIST_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("PERSIST_DEBUG", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    runs = tmp_path / "runs"
    code, err = invoke(argv(work, tiny_folder, str(runs)), monkeypatch, capsys)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert expect in lines[0], lines[0]
    assert "Traceback" not in err
    assert not runs.exists() or not any(runs.iterdir()), sorted(runs.rglob("*"))


def test_resuming_with_another_config_lists_the_fields(tmp_path, tiny_folder, monkeypatch, capsys):
    monkeypatch.setenv("PERSIST_HOME", str(tmp_path / "home"))
    base = ["score", "--model", str(tiny_folder), "--runs-dir", str(tmp_path / "runs"), "--name", "r"]
    monkeypatch.setattr(sys, "argv", ["persist", *base, "--limit", "2"])
    cli.main()
    capsys.readouterr()
    before = (tmp_path / "runs" / "r" / "records.jsonl").read_bytes()
    code, err = invoke([*base, "--limit", "3"], monkeypatch, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "limit: 2 -> 3" in err, err
    assert (tmp_path / "runs" / "r" / "records.jsonl").read_bytes() == before


def test_disk_full_while_writing_records(tmp_path, tiny_folder, monkeypatch, capsys):
    monkeypatch.setenv("PERSIST_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PERSIST_FAILPOINT", "enospc:1")
    code, err = invoke(["score", "--model", str(tiny_folder), "--limit", "4", "--runs-dir", str(tmp_path / "runs"),
                        "--name", "full"], monkeypatch, capsys)
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]  # the progress line is on stderr too
    assert code == 2 and len(errors) == 1, err
    assert "no space left" in err.lower() and "records.jsonl" in err and "resume" in err
    records = (tmp_path / "runs" / "full" / "records.jsonl").read_text()
    assert records == "" or records.endswith("\n")


def test_at_least_thirty_cases():
    assert len(CASES) + 2 >= 30


def test_remote_code_never_runs_without_the_flag(tmp_path, tiny_folder, monkeypatch, capsys):
    """A folder whose config points at its own Python code: without --trust-remote-code that code must not run."""
    folder = tmp_path / "remote"
    shutil.copytree(tiny_folder, folder)
    marker = tmp_path / "EXECUTED"
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="evil-remote", auto_map={"AutoConfig": "configuration_evil.EvilConfig",
                                                      "AutoModelForCausalLM": "modeling_evil.EvilModel"})
    (folder / "config.json").write_text(json.dumps(config))
    for name in ("configuration_evil.py", "modeling_evil.py"):
        (folder / name).write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n")
    monkeypatch.setenv("PERSIST_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    code, err = invoke(["score", "--model", str(folder), "--limit", "2", "--runs-dir", str(tmp_path / "runs")],
                       monkeypatch, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "trust" in err.lower() or "remote" in err.lower(), err
    assert not marker.exists()
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize("command", ["score", "attack", "finetune-attack", "study", "generate"])
def test_cuda_requested_on_a_torch_without_cuda(command, tmp_path, tiny_folder, monkeypatch, capsys):
    """--device cuda where torch sees no CUDA: one line naming what to install, exit 2, no traceback, nothing
    written. (torch.cuda.is_available is patched, so the test means the same on a GPU machine.)"""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("PERSIST_HOME", str(tmp_path / "home"))
    runs = tmp_path / "runs"
    argv = [command, "--model", str(tiny_folder), "--device", "cuda"]
    argv += ["hello"] if command == "generate" else [R, str(runs)]
    if command == "study":
        argv += ["--baseline", "tiny-random"]
    code, err = invoke(argv, monkeypatch, capsys)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "--device cuda" in lines[0] and "TORCH_SPEC" in lines[0] and "Traceback" not in err
    assert not runs.exists() or not any(runs.iterdir())
