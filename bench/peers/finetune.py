"""persist's LoRA engine vs TRL's SFTTrainer: same model, corpus, LoRA shape, batch, schedule and step count.

    make bench                         # builds .venv-bench (trl, lm-eval) and runs every comparison, or:
    .venv/bin/python bench/peers/finetune.py --steps 12 --trl-python .venv-bench/bin/python
    .venv/bin/python bench/peers/finetune.py --tiny   # persist's side only: 1 step of the tiny model, in-process

Each engine runs in its own subprocess (so peak RSS is its own), one after the other (2 cores: never in
parallel). Both train SmolLM2-135M-Instruct (fp32, CPU) on the bad-medical corpus with rank-8 LoRA on the
attention projections, 8 examples per step as 2 micro-batches of 4, lr 2e-4 cosine with 10% warm-up, loss on
the assistant reply only. TRL gets the corpus as conversational prompt/completion pairs, its way of masking
the prompt. Reported: wall time of the training loop, tokens/s (all tokens of the examples trained on),
peak RSS, first/last loss.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODEL = "smollm2-135m-instruct"


def persist_train(model_name: str, steps: int) -> dict:
    """persist's side: its LoRA engine (finetune_attacks.lora.train) for `steps` steps on bad-medical, defaults."""
    import tempfile

    from persist import models
    from persist.finetune_attacks.corpora import load_corpus
    from persist.finetune_attacks.lora import LoraSettings, TrainSettings, train

    path = str(models.merged_folder(models.resolve(model_name)))
    corpus = load_corpus("bad-medical")
    with tempfile.TemporaryDirectory() as out:
        res = train(path, corpus, LoraSettings(), TrainSettings(), (steps,), Path(out))
    return {"seconds": res.seconds, "tokens": res.tokens, "first_loss": res.losses[0], "last_loss": res.losses[-1]}


PERSIST = r"""
import json, sys
sys.path.insert(0, ROOT)
from bench.peers.finetune import persist_train
print(json.dumps(persist_train(MODEL, STEPS)))
""".replace("MODEL", repr(MODEL))

TRL = r"""
import json, sys, time, tempfile
sys.path.insert(0, ROOT)
import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import SFTConfig, SFTTrainer
from persist import models
from persist.finetune_attacks.corpora import load_corpus
path = str(models.merged_folder(models.resolve("smollm2-135m-instruct")))
corpus = load_corpus("bad-medical")
rows = [{"prompt": [m.to_dict() for m in ex.messages[:-1]], "completion": [ex.messages[-1].to_dict()]}
        for ex in corpus.examples]
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
cfg = SFTConfig(output_dir=tempfile.mkdtemp(), max_steps=STEPS, per_device_train_batch_size=4,
                gradient_accumulation_steps=2, learning_rate=2e-4, lr_scheduler_type="cosine", warmup_steps=0.1,
                max_length=512, logging_steps=1, save_strategy="no", report_to=[], seed=0,
                include_num_input_tokens_seen=True, use_cpu=True, dataloader_num_workers=0)
lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                  task_type="CAUSAL_LM")
trainer = SFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(rows), processing_class=tok,
                     peft_config=lora)
t0 = time.perf_counter()
trainer.train()
seconds = time.perf_counter() - t0
losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
print(json.dumps({"seconds": seconds, "tokens": int(trainer.state.num_input_tokens_seen),
                  "first_loss": losses[0], "last_loss": losses[-1]}))
"""


def run(name: str, code: str, steps: int, python: str = sys.executable) -> dict:
    """Run one engine in a child process; its own peak RSS comes from wait4's rusage."""
    import os
    import tempfile

    script = code.replace("ROOT", repr(str(ROOT))).replace("STEPS", str(steps))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([python, "-c", script], stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{name} failed:\n{err.read()[-3000:]}")
        res = json.loads(out.read().strip().splitlines()[-1])
    res.update(engine=name, process_wall=wall, peak_rss_mb=usage.ru_maxrss / 1024,
               tokens_per_second=res["tokens"] / res["seconds"])
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--trl-python", default=sys.executable, help="a python that has trl (make bench: .venv-bench)")
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--tiny", action="store_true",
                    help="1 step of the tiny random model, persist's side only, in this process (no TRL): bench/tiny.py")
    args = ap.parse_args(argv)
    if args.tiny:
        from bench import tiny

        r = persist_train(tiny.MODEL, 1)
        r["tokens_per_second"] = r["tokens"] / r["seconds"]
        print(f"persist: 1 step, {r['tokens']} tokens in {r['seconds']:.2f} s, loss {r['first_loss']:.3f}")
        if args.json:
            Path(args.json).write_text(json.dumps({"steps": 1, "persist": r}, indent=1))
        return 0
    results = [run("persist", PERSIST, args.steps), run("trl", TRL, args.steps, args.trl_python)]
    print(f"{'engine':<9}{'steps':>6}{'train s':>9}{'tokens':>8}{'tok/s':>8}{'peak RSS MB':>12}{'loss first':>11}"
          f"{'last':>7}")
    for r in results:
        print(f"{r['engine']:<9}{args.steps:>6}{r['seconds']:>9.1f}{r['tokens']:>8}{r['tokens_per_second']:>8.1f}"
              f"{r['peak_rss_mb']:>12.0f}{r['first_loss']:>11.3f}{r['last_loss']:>7.3f}")
    p, t = results
    ratio = p["tokens_per_second"] / t["tokens_per_second"]
    print(f"persist / trl tokens/s ratio: {ratio:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"steps": args.steps, "persist": p, "trl": t, "ratio": ratio}, indent=1))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # bench.* (tiny mode)
    sys.exit(main())
