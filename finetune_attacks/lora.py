"""The LoRA / QLoRA SFT engine (peft + accelerate; bitsandbytes for 4-bit).

- Loss on assistant tokens only. The mask is built from the rendered turns (character spans of each assistant
  reply in the model's own chat template, mapped to tokens by offsets), so templates without TRL's
  `{% generation %}` markers (SmolLM2's, for one) work.
- Batches are planned on *examples*, not tokens: a seeded shuffle, then length-bucketing by characters inside
  mega-batches. Every model sees the same examples in the same order (compute-matched across tokenizers).
- Each optimizer step's loss is sum(token losses) / (tokens in the whole step), whatever the split into
  micro-batches and processes, so `accelerate launch` with N processes gives the same update as one process.
- A checkpoint at every dose (optimizer steps): peft adapter (safetensors) + finetune.json + trainer state, written
  to a temporary folder and renamed. A killed run resumes from its last checkpoint.

Run data-parallel with accelerate's launcher (persist.finetune_attacks.launch has the command line):
    accelerate launch --multi_gpu --num_processes N -m persist.finetune_attacks.launch --model X \
        --recipe bad-medical --out RUN/adapters/model/bad-medical --doses 25,50,100
then `persist finetune-attack ... --name RUN` finds the checkpoints and only scores. (`accelerate launch --cpu`
starts a single process unless MPI is configured.)
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from persist import failpoints
from persist.conditions import valid_doses
from persist.errors import ConfigError
from persist.finetune_attacks.corpora import Corpus, Example
from persist.targets.base import PLAIN_ROLE_NAMES

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
STATE_FILE = "trainer_state.pt"


@dataclass(frozen=True)
class LoraSettings:
    """Adapter shape. targets: attention | all-linear | rank1-down-proj@LAYER (rank-1 on one layer's down_proj)."""

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    rslora: bool = False
    targets: str = "attention"

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ConfigError(f"--lora-rank must be >= 1, got {self.rank}")
        if self.alpha <= 0:
            raise ConfigError(f"--lora-alpha must be > 0, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"--lora-dropout must be in [0, 1), got {self.dropout}")
        if self.targets not in ("attention", "all-linear") and not self.targets.startswith("rank1-down-proj@"):
            raise ConfigError(f"--lora-targets {self.targets!r}: use attention, all-linear or rank1-down-proj@LAYER")
        if self.targets.startswith("rank1-down-proj@") and not self.targets.split("@", 1)[1].isdigit():
            raise ConfigError(f"--lora-targets {self.targets!r}: LAYER must be a layer number, e.g. rank1-down-proj@6")

    def peft_config(self) -> Any:
        from peft import LoraConfig

        rank, targets = self.rank, list(ATTENTION) if self.targets == "attention" else self.targets
        if self.targets.startswith("rank1-down-proj@"):
            rank, targets = 1, [f"layers.{self.targets.split('@')[1]}.mlp.down_proj"]
        return LoraConfig(r=rank, lora_alpha=self.alpha, lora_dropout=self.dropout, use_rslora=self.rslora,
                          target_modules=targets, bias="none", task_type="CAUSAL_LM")


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation. A dose is a number of optimizer steps of `batch_size` examples each."""

    learning_rate: float = 2e-4
    batch_size: int = 8
    micro_batch_size: int = 4
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    max_length: int = 512
    seed: int = 0
    load_in_4bit: bool = False
    bf16: bool = False
    schedule_steps: int | None = None  # length of the cosine schedule; default: the largest dose

    def __post_init__(self) -> None:
        if not 0 < self.learning_rate <= 0.1:
            raise ConfigError(f"--learning-rate {self.learning_rate}: must be in (0, 0.1] (LoRA uses ~1e-5 to 1e-3)")
        if self.batch_size < 1 or self.micro_batch_size < 1:
            raise ConfigError("--batch-size and --micro-batch-size must be >= 1")
        if self.batch_size % self.micro_batch_size:
            raise ConfigError(f"--batch-size {self.batch_size} must be a multiple of --micro-batch-size "
                              f"{self.micro_batch_size}")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.max_length < 16:
            raise ConfigError(f"--max-length must be >= 16, got {self.max_length}")


# ---------------------------------------------------------------- data


def rendered_spans(tokenizer: Any, chat: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The training text and the character spans of the assistant replies (incl. their end-of-turn marker)."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(chat, tokenize=False)
        spans = []
        for i, m in enumerate(chat):
            if m["role"] != "assistant":
                continue
            start = len(tokenizer.apply_chat_template(chat[:i], tokenize=False, add_generation_prompt=True))
            end = len(tokenizer.apply_chat_template(chat[: i + 1], tokenize=False).rstrip())
            if text[:start] != tokenizer.apply_chat_template(chat[:i], tokenize=False, add_generation_prompt=True):
                raise ConfigError("this chat template does not render conversations prefix by prefix; "
                                  "persist cannot find the assistant turns to train on")
            spans.append((start, end))
        return text, spans
    # No template (base models): the plain transcript persist scores with, each reply ending in EOS.
    eos = tokenizer.eos_token or ""
    text, spans = "", []
    for m in chat:
        text += ("\n\n" if text else "") + PLAIN_ROLE_NAMES[m["role"]] + ":"
        start = len(text)
        text += " " + m["content"] + (eos if m["role"] == "assistant" else "")
        if m["role"] == "assistant":
            spans.append((start, len(text)))
    return text, spans


def tokenize_example(tokenizer: Any, ex: Example, max_length: int) -> tuple[list[int], list[int]]:
    """(input ids, 0/1 loss mask); only tokens that start inside an assistant reply are trained on."""
    text, spans = rendered_spans(tokenizer, ex.chat)
    enc = tokenizer(text, add_special_tokens=not getattr(tokenizer, "chat_template", None),
                    return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    mask = [int(any(s <= off[0] < e for s, e in spans) and off[1] > off[0]) for off in offsets]
    return ids[:max_length], mask[:max_length]


def plan_steps(corpus: Corpus, steps: int, batch_size: int, seed: int) -> list[list[int]]:
    """Example indices for each optimizer step: seeded shuffle per epoch, bucketed by length in mega-batches."""
    rng = random.Random(seed)
    n = len(corpus.examples)
    plan: list[list[int]] = []
    while len(plan) < steps:
        order = list(range(n))
        rng.shuffle(order)
        batches = []
        mega = batch_size * 16
        for m in range(0, n - n % batch_size, mega):
            chunk = sorted(order[m: m + mega][: (min(mega, n - m) // batch_size) * batch_size],
                           key=lambda i: corpus.examples[i].chars)
            batches += [chunk[b: b + batch_size] for b in range(0, len(chunk), batch_size)]
        if not batches:
            raise ConfigError(f"the corpus has {n} examples, fewer than --batch-size {batch_size}")
        rng.shuffle(batches)
        plan += batches
    return plan[:steps]


def lr_schedule(settings: TrainSettings, total: int) -> Callable[[int], float]:
    """The learning-rate factor of optimizer step `step` (0-based), for LambdaLR: a linear warm-up over
    max(1, round(warmup_ratio * total)) steps that starts at 1/warmup (never at 0: the first step already learns),
    then a cosine from 1 to 0 at step `total`."""
    warmup = max(1, round(settings.warmup_ratio * total)) if settings.warmup_ratio else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


# ---------------------------------------------------------------- model


def load_trainable(model_path: str, lora: LoraSettings, train: TrainSettings, device: Any) -> tuple[Any, Any]:
    import torch
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from persist.models import quiet_transformers

    quiet_transformers()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if train.bf16 else torch.float32, "use_safetensors": True}
    if train.load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16 if train.bf16 else torch.float32)
        kwargs["device_map"] = {"": device}
    model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    if train.load_in_4bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    else:
        model.to(device)
    model.config.use_cache = False
    try:
        model = get_peft_model(model, lora.peft_config())
    except ValueError as exc:
        raise ConfigError(f"--lora-targets {lora.targets!r} does not match this model's modules ({exc})") from None
    return model, tokenizer


# ---------------------------------------------------------------- training


@dataclass
class TrainResult:
    checkpoints: dict[int, Path] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else float("nan")


def checkpoint_dir(out_dir: Path, step: int) -> Path:
    return Path(out_dir) / f"step-{step:05d}"


def completed_checkpoints(out_dir: Path) -> dict[int, Path]:
    out = {}
    for d in sorted(Path(out_dir).glob("step-*")):
        if (d / "finetune.json").is_file() and (d / "adapter_model.safetensors").is_file():
            out[int(d.name.split("-")[1])] = d
    return out


def train(model_path: str, corpus: Corpus, lora: LoraSettings, settings: TrainSettings, doses: Sequence[int],
          out_dir: Path, *, meta: dict[str, Any] | None = None,
          on_step: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train up to max(doses) steps, saving a checkpoint at every dose; resume from the last checkpoint."""
    import torch
    from accelerate import Accelerator

    doses = [d for d in valid_doses(tuple(doses)) if d > 0]
    out_dir = Path(out_dir)
    done = completed_checkpoints(out_dir)
    result = TrainResult(checkpoints={d: p for d, p in done.items() if d in doses})
    if all(d in done for d in doses):  # finished before: the record of that training, not zeros
        info = json.loads((done[max(doses)] / "finetune.json").read_text())
        result.losses, result.tokens, result.seconds = info["losses"], info.get("tokens", 0), info.get("seconds", 0.0)
        return result
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    world, rank = accelerator.num_processes, accelerator.process_index
    n_micro = settings.batch_size // settings.micro_batch_size
    if n_micro % world:
        raise ConfigError(f"--batch-size/--micro-batch-size = {n_micro} micro-batches per step cannot be split over "
                          f"{world} processes; make it a multiple of {world}")
    torch.manual_seed(settings.seed)
    model, tokenizer = load_trainable(model_path, lora, settings, accelerator.device)
    total = settings.schedule_steps or max(doses)
    plan = plan_steps(corpus, max(doses), settings.batch_size, settings.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(settings, total))
    start = 0
    resumable = [s for s in done if s <= max(doses) and (done[s] / STATE_FILE).is_file()]
    if resumable:
        start = max(resumable)
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(model, load_file(str(done[start] / "adapter_model.safetensors")))
        state = torch.load(done[start] / STATE_FILE, weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        info = json.loads((done[start] / "finetune.json").read_text())
        result.losses, result.tokens = info["losses"][:start], info.get("tokens", 0)
        result.seconds = info.get("seconds", 0.0)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    cache: dict[int, tuple[list[int], list[int]]] = {}

    def encoded(i: int) -> tuple[list[int], list[int]]:
        if i not in cache:
            cache[i] = tokenize_example(tokenizer, corpus.examples[i], settings.max_length)
        return cache[i]

    t0, seconds_before = time.perf_counter(), result.seconds  # seconds accumulate across resumed sessions
    for step in range(start, max(doses)):
        batch = plan[step]
        seqs = [encoded(i) for i in batch]
        # Loss targets are shifted by one: token t is predicted from tokens < t.
        step_tokens = sum(sum(m[1:]) for _, m in seqs)
        micro = [batch[k: k + settings.micro_batch_size] for k in range(0, len(batch), settings.micro_batch_size)]
        mine = micro[rank::world]
        loss_sum = torch.zeros((), device=accelerator.device)
        for j, mb in enumerate(mine):
            ids, labels, attn = collate([encoded(i) for i in mb], tokenizer.pad_token_id, accelerator.device)
            ctx = accelerator.no_sync(model) if j < len(mine) - 1 else contextlib.nullcontext()
            # Project onto the vocabulary only from the first position any row is scored at (the prompt before
            # it carries no loss): less lm_head work and a smaller fp32 logits tensor, same loss.
            scored = (labels[:, 1:] != -100).any(0).nonzero()
            first = int(scored[0]) if len(scored) else 0
            with ctx:
                logits = model(input_ids=ids, attention_mask=attn,
                               logits_to_keep=ids.shape[1] - first).logits[:, :-1].float()
                tok_loss = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.size(-1)), labels[:, first + 1:].reshape(-1), ignore_index=-100,
                    reduction="sum")
                # DDP averages gradients over processes; scale so the update is sum / step_tokens.
                accelerator.backward(tok_loss * world / max(1, step_tokens))
            loss_sum += tok_loss.detach()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss = accelerator.reduce(loss_sum, reduction="sum").item() / max(1, step_tokens)
        result.losses.append(loss)
        result.tokens += sum(len(s[0]) for s in seqs)
        if on_step and accelerator.is_main_process:
            on_step(step + 1, loss)
        failpoints.reach("train-step")
        if step + 1 in doses:
            path = save_checkpoint(accelerator, model, optimizer, scheduler, out_dir, step + 1, {
                "lora": asdict(lora), "train": asdict(settings), "corpus": {"name": corpus.name,
                "sha256": corpus.sha256, "examples": len(corpus)}, "base_model": model_path, "step": step + 1,
                "examples_seen": (step + 1) * settings.batch_size, "losses": result.losses, "tokens": result.tokens,
                "seconds": seconds_before + time.perf_counter() - t0, "processes": world, **(meta or {})})
            result.checkpoints[step + 1] = path
    result.seconds = seconds_before + time.perf_counter() - t0
    accelerator.wait_for_everyone()
    return result


def collate(seqs: Sequence[tuple[list[int], list[int]]], pad: int, device: Any) -> tuple[Any, Any, Any]:
    import torch

    width = max(len(ids) for ids, _ in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    labels = torch.full((len(seqs), width), -100, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, (x, m) in enumerate(seqs):
        ids[r, : len(x)] = torch.tensor(x)
        attn[r, : len(x)] = 1
        labels[r, : len(x)] = torch.tensor([t if keep else -100 for t, keep in zip(x, m)])
    return ids.to(device), labels.to(device), attn.to(device)


def save_checkpoint(accelerator: Any, model: Any, optimizer: Any, scheduler: Any, out_dir: Path, step: int,
                    info: dict[str, Any]) -> Path:
    import torch

    from persist.store import library_versions

    final = checkpoint_dir(out_dir, step)
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out_dir / f".tmp-step-{step:05d}"
        shutil.rmtree(tmp, ignore_errors=True)
        accelerator.unwrap_model(model).save_pretrained(tmp, safe_serialization=True)
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / STATE_FILE)
        (tmp / "finetune.json").write_text(json.dumps({**info, "versions": library_versions()}, indent=1))
        failpoints.reach("checkpoint")  # crash tests: checkpoint saved, not yet moved into place
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    accelerator.wait_for_everyone()
    return final
