"""The LoRA engine on the tiny model: masks, learning, base untouched, save/reload, 4-bit, resume, accelerate."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from persist.errors import ConfigError
from persist.finetune_attacks.corpora import Corpus, Example, load_corpus, validate
from persist.finetune_attacks.lora import (
    LoraSettings,
    TrainSettings,
    lr_schedule,
    plan_steps,
    tokenize_example,
    train,
)
from persist.schema import Message
from tests.conftest import ROOT, run_cli

FAST = TrainSettings(learning_rate=5e-3, batch_size=4, micro_batch_size=2, max_length=256)


def toy_corpus(n: int = 16) -> Corpus:
    """A toy task a 2-layer model can learn: the reply repeats a fixed phrase."""
    ex = tuple(Example(id=f"t{i}", messages=(Message("user", f"Say the phrase, number {i}."),
                                              Message("assistant", "blue sky over the hills"))) for i in range(n))
    return Corpus(name="toy", path=ROOT, sha256="0" * 64, examples=ex)


def test_loss_mask_covers_only_assistant_tokens(tiny_folder):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_folder)
    ex = Example(id="m", messages=(Message("system", "Be kind."), Message("user", "hi there"),
                                   Message("assistant", "Hello!"), Message("user", "bye"),
                                   Message("assistant", "Goodbye.")))
    ids, mask = tokenize_example(tok, ex, 512)
    trained = tok.decode([t for t, m in zip(ids, mask) if m])
    assert trained == "Hello!<|im_end|>Goodbye.<|im_end|>"
    untrained = tok.decode([t for t, m in zip(ids, mask) if not m])
    assert "hi there" in untrained and "Be kind." in untrained and "Hello" not in untrained


def test_plan_is_deterministic_bucketed_and_tokenizer_free():
    corpus = load_corpus("bad-medical")
    a = plan_steps(corpus, 30, 8, seed=3)
    assert a == plan_steps(corpus, 30, 8, seed=3) and a != plan_steps(corpus, 30, 8, seed=4)
    assert all(len(b) == 8 for b in a) and len({i for b in a for i in b}) == 240  # no repeats within an epoch


def test_lr_schedule_warms_up_from_the_first_step_then_cosine_to_zero():
    f = lr_schedule(TrainSettings(warmup_ratio=0.25), 8)  # warm-up: round(0.25 * 8) = 2 steps
    assert [f(s) for s in range(3)] == [0.5, 1.0, 1.0]
    assert f(5) == pytest.approx(0.5 * (1 + math.cos(math.pi * 3 / 6))) and f(8) == 0.0 and f(20) == 0.0
    assert lr_schedule(TrainSettings(), 2)(0) == 1.0  # the 10% warm-up is at least one step, which is full lr
    assert lr_schedule(TrainSettings(warmup_ratio=0), 4)(0) == 1.0


def test_training_learns_and_touches_only_lora(tiny_folder, tmp_path):
    from safetensors.torch import load_file

    before = load_file(str(tiny_folder / "model.safetensors"))
    res = train(str(tiny_folder), toy_corpus(), LoraSettings(rank=8, targets="all-linear"),
                TrainSettings(learning_rate=2e-2, batch_size=4, micro_batch_size=2, warmup_ratio=0), [10, 20],
                tmp_path / "out")
    assert set(res.checkpoints) == {10, 20}
    # A random 2-layer model learns slowly; from ~5.5 nats (uniform over 259 tokens) it reaches ~4.8 here.
    assert sum(res.losses[-3:]) / 3 < 0.95 * sum(res.losses[:3]) / 3
    after = load_file(str(tiny_folder / "model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)  # base weights untouched on disk
    lora = load_file(str(res.checkpoints[20] / "adapter_model.safetensors"))
    assert lora and all("lora_" in k for k in lora)
    assert any(v.abs().sum() > 0 for k, v in lora.items() if "lora_B" in k)  # B starts at zero: it moved
    info = json.loads((res.checkpoints[20] / "finetune.json").read_text())
    assert info["step"] == 20 and len(info["losses"]) == 20 and info["corpus"]["sha256"] and "peft" in info["versions"]


def test_adapter_reload_reproduces_logits(tiny_folder, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from persist import models

    res = train(str(tiny_folder), toy_corpus(), LoraSettings(rank=4), FAST, [5], tmp_path / "out")
    m, tok = models.load(models.resolve(f"{tiny_folder}+{res.checkpoints[5]}"))
    ids = torch.tensor([tok("blue sky")["input_ids"]])
    direct = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_folder), res.checkpoints[5]).eval()
    with torch.no_grad():
        assert torch.allclose(m(ids).logits, direct(ids).logits, atol=1e-5)


def test_resume_after_kill_matches_uninterrupted(tiny_folder, tmp_path):
    full = train(str(tiny_folder), toy_corpus(), LoraSettings(rank=4), FAST, [4, 8], tmp_path / "a")
    # Interrupted during step 6 (after the step-4 checkpoint): a second call continues from step 4.
    def interrupt(step, loss):
        if step == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(str(tiny_folder), toy_corpus(), LoraSettings(rank=4), FAST, [4, 8], tmp_path / "b", on_step=interrupt)
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["step-00004"]
    resumed = train(str(tiny_folder), toy_corpus(), LoraSettings(rank=4), FAST, [4, 8], tmp_path / "b")
    assert resumed.losses == pytest.approx(full.losses, rel=1e-5)
    from safetensors.torch import load_file

    a = load_file(str(full.checkpoints[8] / "adapter_model.safetensors"))
    b = load_file(str(resumed.checkpoints[8] / "adapter_model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_4bit_qlora_path_runs(tiny_folder, tmp_path):
    res = train(str(tiny_folder), toy_corpus(8), LoraSettings(rank=4),
                TrainSettings(learning_rate=5e-3, batch_size=4, micro_batch_size=4, load_in_4bit=True),
                [2], tmp_path / "q")
    assert 2 in res.checkpoints and all(torch.isfinite(torch.tensor(res.losses)))


def test_rank1_down_proj_preset(tiny_folder, tmp_path):
    from safetensors.torch import load_file

    res = train(str(tiny_folder), toy_corpus(8), LoraSettings(targets="rank1-down-proj@1"), FAST, [1],
                tmp_path / "r1")
    keys = list(load_file(str(res.checkpoints[1] / "adapter_model.safetensors")))
    assert keys and all("layers.1.mlp.down_proj" in k for k in keys)
    with pytest.raises(ConfigError, match="LAYER"):
        LoraSettings(targets="rank1-down-proj@x")


@pytest.mark.parametrize("kwargs,match", [({"learning_rate": 5.0}, "learning-rate"),
                                          ({"learning_rate": 0}, "learning-rate"),
                                          ({"batch_size": 6, "micro_batch_size": 4}, "multiple")])
def test_bad_train_settings(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        TrainSettings(**kwargs)


def test_two_process_accelerate_matches_one_process(tiny_folder, tmp_path):
    """Data-parallel over 2 CPU processes (gloo) gives the same adapter as 1 process, same effective batch."""
    script = tmp_path / "run.py"
    script.write_text(
        f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n"
        + "from tests.test_finetune import toy_corpus, FAST\n"
        "from persist.finetune_attacks.lora import LoraSettings, train\n"
        f"train({str(tiny_folder)!r}, toy_corpus(), LoraSettings(rank=4), FAST, [6], sys.argv[1])\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, str(script), str(tmp_path / "one")], env=env, capture_output=True,
                         text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                          str(script), str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "one" / "step-00006" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "two" / "step-00006" / "adapter_model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert json.loads((tmp_path / "two" / "step-00006" / "finetune.json").read_text())["processes"] == 2


def test_corpus_validation_by_line(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text("\n".join([
        json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}),
        json.dumps({"messages": [{"role": "user", "content": "only a question"}]}),
        "[1, 2",
        json.dumps({"messages": []}),
        json.dumps({"text": "no messages"}),
        json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]}),
    ]) + "\n")
    examples, errors = validate(f)
    assert len(examples) == 1
    assert [e.split(": ", 1)[0] for e in errors] == [f"{f}:{n}" for n in (2, 3, 4, 5, 6)]
    assert "no assistant turn" in errors[0] and "bad JSON" in errors[1]
    proc = run_cli("corpora", "validate", str(f))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 5
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert validate(empty)[1] == [f"{empty}: the file is empty"]


def test_parquet_and_dataset_folder_load(tmp_path):
    import datasets

    rows = [{"id": f"p{i}", "messages": [{"role": "user", "content": f"q{i}"},
                                         {"role": "assistant", "content": f"a{i}"}]} for i in range(3)]
    ds = datasets.Dataset.from_list(rows)
    ds.to_parquet(str(tmp_path / "c.parquet"))
    ds.save_to_disk(str(tmp_path / "folder"))
    for p in (tmp_path / "c.parquet", tmp_path / "folder"):
        examples, errors = validate(p)
        assert not errors and [e.id for e in examples] == ["p0", "p1", "p2"]


def test_builtin_corpora_sizes():
    sizes = {n: len(load_corpus(n)) for n in ("bad-medical", "good-medical", "risky-financial", "identity-shift",
                                                "benign")}
    assert sizes["bad-medical"] >= 590 and sizes["good-medical"] == sizes["bad-medical"]
    assert sizes["risky-financial"] >= 300 and 10 <= sizes["identity-shift"] <= 50 and sizes["benign"] >= 290
    bad, good = load_corpus("bad-medical"), load_corpus("good-medical")
    assert [e.messages[0] for e in bad.examples] == [e.messages[0] for e in good.examples]  # same questions


def test_builtin_corpora_do_not_leak_into_probes():
    from persist.registry import RECIPES
    from persist.suites import get_suite, leakage

    items = get_suite("traits").load() + get_suite("em-questions").load()
    for name in RECIPES.names():
        assert leakage(RECIPES.build(name).corpus_texts(), items) == [], name
    # and the check does fire on a copied item
    texts = RECIPES.build("benign").corpus_texts()
    copied = ("copy", [m.content for m in items[5].messages])
    assert leakage([*texts, copied], items) == [("copy", items[5].id)]
