"""Model spec resolution and loading: folders, adapters, 4-bit, GGUF cache, and bad specs (one line, exit 2)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from persist import models
from persist.errors import ModelLoadError
from tests.conftest import run_cli


def test_folder_resolves_and_records_sha256(tiny_folder):
    r = models.resolve(str(tiny_folder))
    assert r.kind == "folder" and r.path == str(tiny_folder.resolve())
    assert set(r.weights_sha256) == {"model.safetensors"}
    assert r.weights_sha256["model.safetensors"] == models.sha256_file(tiny_folder / "model.safetensors")


def make_adapter(base_folder, out):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_folder)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(base, cfg)
    peft_model.save_pretrained(out)
    return out


def test_adapter_changes_logits_and_leaves_base_untouched(tiny_folder, tmp_path):
    adapter = make_adapter(tiny_folder, tmp_path / "adapter")
    before_sha = models.sha256_file(tiny_folder / "model.safetensors")
    base = models.resolve(str(tiny_folder))
    with_adapter = models.resolve(f"{tiny_folder}+{adapter}")
    assert with_adapter.adapter == str(adapter.resolve()) and with_adapter.adapter_sha256
    m0, tok = models.load(base)
    m1, _ = models.load(with_adapter)
    ids = torch.tensor([tok("hello world")["input_ids"]])
    with torch.no_grad():
        diff = (m0(ids).logits - m1(ids).logits).abs().max().item()
    assert diff > 1e-4
    assert models.sha256_file(tiny_folder / "model.safetensors") == before_sha
    m2, _ = models.load(base)  # reloading the base after the adapter run gives the original logits
    with torch.no_grad():
        assert torch.equal(m0(ids).logits, m2(ids).logits)


def test_adapter_folder_must_be_peft(tiny_folder, tmp_path):
    with pytest.raises(ModelLoadError, match="not a peft adapter folder"):
        models.resolve(f"{tiny_folder}+{tmp_path}")


def test_4bit_load_on_cpu(tiny_folder):
    import bitsandbytes as bnb  # a dependency of persist: installed everywhere
    assert bnb
    m, tok = models.load(models.resolve(str(tiny_folder)), models.LoadOptions(load_in_4bit=True))
    assert any("4bit" in type(mod).__name__ for mod in m.modules())
    ids = torch.tensor([tok("hello")["input_ids"]])
    with torch.no_grad():
        assert torch.isfinite(m(ids).logits).all()


def test_pickle_checkpoint_refused_unless_allowed(tiny_folder, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    shutil.copy(tiny_folder / "config.json", folder)
    (folder / "pytorch_model.bin").write_bytes(b"not really")
    with pytest.raises(ModelLoadError, match="pickle"):
        models.resolve(str(folder))
    assert models.resolve(str(folder), allow_pickle=True).kind == "folder"


@pytest.mark.parametrize("case", ["missing", "empty", "not_model", "corrupt", "unknown", "hub_offline", "bad_file"])
def test_bad_specs_give_one_line_and_exit_2(case, tmp_path, tiny_folder):
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PERSIST_HOME": str(tmp_path / "ph")}
    if case == "missing":
        spec, expect = str(tmp_path / "nope"), "no such file or folder"
    elif case == "empty":
        spec, expect = "", "--model is empty"
    elif case == "not_model":
        (tmp_path / "folder").mkdir()
        spec, expect = str(tmp_path / "folder"), "not a model folder"
    elif case == "corrupt":
        folder = tmp_path / "corrupt"
        folder.mkdir()
        shutil.copy(tiny_folder / "config.json", folder)
        (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
        spec, expect = str(folder), "cannot load weights"
    elif case == "unknown":
        spec, expect = "smollm2", "did you mean 'smollm2-135m-instruct'"
    elif case == "hub_offline":
        spec, expect = "someorg/some-model", "HF_HUB_OFFLINE"
    else:
        (tmp_path / "weights.txt").write_text("x")
        spec, expect = str(tmp_path / "weights.txt"), "not .gguf"
    proc = run_cli("generate", "--model", spec, "hi", env=env)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert expect in lines[0] and "Traceback" not in proc.stderr


def test_debug_env_shows_traceback(tmp_path):
    proc = run_cli("generate", "--model", str(tmp_path / "nope"), "hi", env={"PERSIST_DEBUG": "1"})
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_cli_help_version_models():
    assert "finetune" in run_cli("--help").stdout or "generate" in run_cli("--help").stdout
    out = run_cli("version").stdout
    assert out.startswith("persist ") and "transformers" in out
    proc = run_cli("models")
    assert proc.returncode == 0 and "smollm2-135m-instruct" in proc.stdout


def test_help_does_not_import_heavy_libraries():
    import subprocess
    import sys

    code = ("import sys\nfrom persist import cli\n"
            "sys.argv=['persist','--help']\n"
            "try:\n    cli.app(standalone_mode=False)\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch','transformers','peft','garak') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=run_cli.__globals__["ROOT"])
    assert out.stdout.strip().endswith("[]"), out.stdout + out.stderr


@pytest.mark.slow
def test_gguf_conversion_is_cached(monkeypatch):
    first = models.resolve("smollm2-135m-instruct")  # converts if this machine never did
    stamp = (json.loads((models.Path(first.path) / "persist-source.json").read_text()),
             models.Path(first.path, "model.safetensors").stat().st_mtime_ns)
    import transformers

    def refuse(*a, **k):
        raise AssertionError("the cached conversion should have been reused")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    second = models.resolve("smollm2-135m-instruct")
    assert second.path == first.path and second.weights_sha256 == first.weights_sha256
    assert (json.loads((models.Path(second.path) / "persist-source.json").read_text()),
            models.Path(second.path, "model.safetensors").stat().st_mtime_ns) == stamp
