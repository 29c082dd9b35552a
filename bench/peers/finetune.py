"""persist's LoRA engine vs TRL's SFTTrainer, on the same examples in the same order with the same update rule.

    make bench                         # builds .venv-bench (trl, lm-eval) and runs every comparison, or:
    .venv/bin/python bench/peers/finetune.py --steps 12 --trl-python .venv-bench/bin/python
    .venv/bin/python bench/peers/finetune.py --tiny   # persist's side only: 1 step of the tiny model, in-process

Each engine runs in its own subprocess (so peak RSS is its own), one after the other (2 cores: never in
parallel). Both train SmolLM2-135M-Instruct (fp32; on the GPU if there is one, else the CPU) on the bad-medical
corpus with persist's default settings (LoraSettings(), TrainSettings()). Matched, by construction:

- Examples and order: persist's plan (lora.plan_steps: a seeded shuffle, length-bucketed in mega-batches) for
  --steps steps of 8 examples. TRL gets those examples as one dataset row per occurrence, flattened in step order,
  read by a SequentialSampler (no shuffle), so its step k is persist's step k, split into the same 2 micro-batches
  of 4 (persist: the step's first 4 examples, then the last 4).
- Tokens and loss mask: both sides train on persist's tokenization (lora.tokenize_example: the chat template's
  rendering, truncated to max_length 512, loss on the tokens of the assistant reply and its <|im_end|>). TRL gets
  them pre-tokenized (input_ids + labels), so no packing, no re-tokenization. TRL's own prompt/completion path
  gives the same input_ids on bad-medical (all 598 examples) but also trains the "\\n" after <|im_end|>: one more
  loss token per example (61.3 on average), a different loss, hence the pre-tokenized rows.
- Padding: right-padding to the longest sequence of each micro-batch, with the tokenizer's pad token, masked out
  of attention and loss (persist's collate; TRL's DataCollatorForLanguageModeling with pad_to_multiple_of=None).
- Loss normalisation: each step's loss is sum(token losses over the step's 8 examples) / (loss tokens in the whole
  step): each micro-batch's summed loss is divided by the step's count, not its own (persist: step_tokens;
  transformers' Trainer counts the step's shifted labels != -100 as num_items_in_batch and TRL's compute_loss
  divides by it), and the 2 micro-batches' gradients add up.
- Model and adapter: the same weights, fp32, sdpa attention, rank-8 LoRA (alpha 16, no dropout) on q/k/v/o
  (LoraSettings().peft_config() for both). The adapter's A matrices are drawn after seeding the torch RNG with 0
  (persist: torch.manual_seed before loading; SFTTrainer: set_seed(args.seed) before get_peft_model; loading the
  weights draws no random numbers), so both start from the same adapter. The per-step losses show it: they agree
  at every step, not only at the first (where B = 0 makes the init irrelevant).
- Optimizer and schedule: torch AdamW (not fused: optim="adamw_torch"), lr 2e-4, no weight decay, persist's
  schedule (lora.lr_schedule: warm-up over max(1, round(10% of the steps)) starting at 1/warmup, then cosine to 0)
  installed in TRL by overriding create_scheduler; TRL's own cosine would start at lr 0 and warm up over
  ceil(10%) steps. No gradient clipping (max_grad_norm=0: persist clips nothing). No gradient checkpointing and no
  bf16 autocast (TRL's defaults turn both on; persist uses neither here).

Reported per engine: seconds of the training loop (persist: its step loop, tokenization of each new example
included; TRL: on_train_begin to on_train_end, the dataset already tokenized), tokens (all non-pad tokens of the
examples trained on: persist's count, TRL's own num_tokens; the script fails unless both are equal, and unless
TRL's per-step counts are the plan's), tokens/s, peak RSS of the child process, the per-step loss curve; and the
relative difference of the last losses. Not matched: each engine's own computation, which is what is raced
(persist projects onto the vocabulary only from the first scored position; TRL uses its fused LM-head loss and
also computes entropy and token accuracy every micro-batch, and the gradient norm every step), so the losses agree
to float rounding, not bit for bit.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MODEL = "smollm2-135m-instruct"
CORPUS = "bad-medical"


def trained_rows(tokenizer: Any, corpus: Any, steps: int, settings: Any) -> list[dict[str, list[int]]]:
    """The examples persist trains on in `steps` steps, in its order (lora.plan_steps), one row per occurrence:
    input_ids as persist tokenizes them (truncated to max_length) and labels (-100 outside the loss mask)."""
    from persist.finetune_attacks.lora import plan_steps, tokenize_example

    rows = []
    for batch in plan_steps(corpus, steps, settings.batch_size, settings.seed):
        for i in batch:
            ids, mask = tokenize_example(tokenizer, corpus.examples[i], settings.max_length)
            rows.append({"input_ids": ids, "labels": [t if keep else -100 for t, keep in zip(ids, mask)]})
    return rows


def persist_train(model_name: str, steps: int) -> dict:
    """persist's side: its LoRA engine (finetune_attacks.lora.train) for `steps` steps on bad-medical, defaults."""
    import tempfile

    from persist import models
    from persist.finetune_attacks.corpora import load_corpus
    from persist.finetune_attacks.lora import LoraSettings, TrainSettings, train

    path = str(models.merged_folder(models.resolve(model_name)))
    corpus = load_corpus(CORPUS)
    with tempfile.TemporaryDirectory() as out:
        res = train(path, corpus, LoraSettings(), TrainSettings(), (steps,), Path(out))
    return {"seconds": res.seconds, "tokens": res.tokens, "losses": res.losses, "first_loss": res.losses[0],
            "last_loss": res.losses[-1]}


def trl_train(model_name: str, steps: int) -> dict:
    """TRL's side (needs trl): SFTTrainer on persist's rows, order, schedule and adapter; see the module docstring."""
    import tempfile

    import torch
    from datasets import Dataset
    from torch.utils.data import SequentialSampler
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from persist import models
    from persist.finetune_attacks.corpora import load_corpus
    from persist.finetune_attacks.lora import LoraSettings, TrainSettings, lr_schedule

    lora, settings = LoraSettings(), TrainSettings()
    path = str(models.merged_folder(models.resolve(model_name)))
    tokenizer = AutoTokenizer.from_pretrained(path)
    rows = trained_rows(tokenizer, load_corpus(CORPUS), steps, settings)
    planned = [sum(len(r["input_ids"]) for r in rows[k: k + settings.batch_size])
               for k in range(0, len(rows), settings.batch_size)]
    torch.manual_seed(settings.seed)  # as persist does before loading (SFTTrainer seeds again before the adapter)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True)
    model.config.use_cache = False

    class InPlanOrder(SFTTrainer):
        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            return SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)

        def create_scheduler(self, num_training_steps: int, optimizer: Any = None) -> Any:
            if self.lr_scheduler is None:
                self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer,
                                                                      lr_schedule(settings, steps))
            return self.lr_scheduler

    class Clock(TrainerCallback):
        def on_train_begin(self, *args: Any, **kwargs: Any) -> None:
            self.t0 = time.perf_counter()

        def on_train_end(self, *args: Any, **kwargs: Any) -> None:
            self.seconds = time.perf_counter() - self.t0

    cfg = SFTConfig(
        output_dir=tempfile.mkdtemp(), max_steps=steps, per_device_train_batch_size=settings.micro_batch_size,
        gradient_accumulation_steps=settings.batch_size // settings.micro_batch_size,
        learning_rate=settings.learning_rate, weight_decay=settings.weight_decay, optim="adamw_torch",
        max_grad_norm=0.0, gradient_checkpointing=False, bf16=False, fp16=False, max_length=settings.max_length,
        packing=False, padding_free=False, pad_to_multiple_of=None, seed=settings.seed, logging_steps=1,
        save_strategy="no", report_to=[], use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
        disable_tqdm=True)
    clock = Clock()
    trainer = InPlanOrder(model=model, args=cfg, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                          peft_config=lora.peft_config(), callbacks=[clock])
    if len(trainer.train_dataset) != len(rows):  # SFTTrainer drops rows with no loss token; none are expected
        raise SystemExit(f"SFTTrainer kept {len(trainer.train_dataset)} of {len(rows)} rows")
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h and "num_tokens" in h]
    seen = [int(h["num_tokens"]) for h in logs]
    per_step = [b - a for a, b in zip([0, *seen], seen)]
    if per_step != planned:
        raise SystemExit(f"TRL's tokens per step {per_step} are not persist's plan {planned}")
    losses = [h["loss"] for h in logs]
    return {"seconds": clock.seconds, "tokens": seen[-1], "losses": losses, "first_loss": losses[0],
            "last_loss": losses[-1]}


PERSIST = r"""
import json, sys
sys.path.insert(0, ROOT)
from bench.peers.finetune import persist_train
print(json.dumps(persist_train(MODEL, STEPS)))
""".replace("MODEL", repr(MODEL))

TRL = r"""
import json, sys
sys.path.insert(0, ROOT)
from bench.peers.finetune import trl_train
print(json.dumps(trl_train(MODEL, STEPS)))
""".replace("MODEL", repr(MODEL))


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


def tiny_run(json_path: str | None) -> int:
    """--tiny: persist's side on the tiny model, and the rows TRL would get, which must hold the same tokens."""
    from transformers import AutoTokenizer

    from bench import tiny
    from persist import models
    from persist.finetune_attacks.corpora import load_corpus
    from persist.finetune_attacks.lora import TrainSettings

    r = persist_train(tiny.MODEL, 1)
    r["tokens_per_second"] = r["tokens"] / r["seconds"]
    tok = AutoTokenizer.from_pretrained(str(models.merged_folder(models.resolve(tiny.MODEL))))
    rows = trained_rows(tok, load_corpus(CORPUS), 1, TrainSettings())
    if sum(len(row["input_ids"]) for row in rows) != r["tokens"]:
        raise SystemExit(f"TRL's rows hold {sum(len(row['input_ids']) for row in rows)} tokens, persist trained on "
                         f"{r['tokens']}")
    print(f"persist: 1 step, {r['tokens']} tokens in {r['seconds']:.2f} s, loss {r['first_loss']:.3f}; "
          f"TRL's rows: {len(rows)} examples, the same tokens")
    if json_path:
        Path(json_path).write_text(json.dumps({"steps": 1, "persist": r}, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--trl-python", default=sys.executable, help="a python that has trl (make bench: .venv-bench)")
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--tiny", action="store_true",
                    help="1 step of the tiny random model, persist's side only, in this process (no TRL): bench/tiny.py")
    args = ap.parse_args(argv)
    if args.tiny:
        return tiny_run(args.json)
    results = [run("persist", PERSIST, args.steps), run("trl", TRL, args.steps, args.trl_python)]
    print(f"{'engine':<9}{'steps':>6}{'train s':>9}{'tokens':>8}{'tok/s':>8}{'peak RSS MB':>12}{'loss first':>11}"
          f"{'last':>7}")
    for r in results:
        print(f"{r['engine']:<9}{args.steps:>6}{r['seconds']:>9.1f}{r['tokens']:>8}{r['tokens_per_second']:>8.1f}"
              f"{r['peak_rss_mb']:>12.0f}{r['first_loss']:>11.3f}{r['last_loss']:>7.3f}")
    p, t = results
    print("loss per step:")
    for step, (a, b) in enumerate(zip(p["losses"], t["losses"], strict=True), 1):
        print(f"{step:>4}  persist {a:.6f}  trl {b:.6f}  ({(b - a) / a:+.2e})")
    if p["tokens"] != t["tokens"]:
        raise SystemExit(f"not the same tokens: persist {p['tokens']}, trl {t['tokens']}; the ratio would mean nothing")
    ratio = p["tokens_per_second"] / t["tokens_per_second"]
    rel = (t["last_loss"] - p["last_loss"]) / p["last_loss"]
    print(f"persist / trl tokens/s ratio: {ratio:.2f}; last loss, trl relative to persist: {rel:+.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps({"steps": args.steps, "persist": p, "trl": t, "ratio": ratio,
                                               "last_loss_rel_diff": rel}, indent=1))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # bench.* (tiny mode)
    sys.exit(main())
