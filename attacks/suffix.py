"""A universal adversarial suffix, optimised white-box by greedy coordinate gradient (GCG, Zou et al. 2023).

One suffix of `length` tokens is appended to the question of every item. It is optimised against one model on the
train half of the items to push that model toward the items' misaligned references: the loss is the mean over a
batch of train items of (log p(aligned reference) - log p(misaligned reference)) per byte, the first reference of
each side. Each step: the gradient of the loss with respect to the suffix's one-hot tokens gives, per position,
the `topk` most promising replacement tokens; `candidates` random single-token swaps drawn from them are scored
exactly and the best one is kept if it lowers the loss. Only printable-ASCII tokens that survive decode-encode
are allowed, so the suffix is plain text that tokenises back to itself. Optimised in bfloat16 autocast on a CPU
with native bfloat16 (2x faster; the evaluation is the run's own dtype), seeded: the same suffix every time.

Evaluated only on the held-out half. `source=other` evaluates the other model's suffix on this model (transfer).
The suffix, its loss curve and the compute spent are saved in the run folder (RUN/attacks/gcg-suffix.../ROLE/).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from persist.attacks.base import Attack, replace_last_user
from persist.attacks.steering import live_target
from persist.errors import ConfigError
from persist.registry import ATTACKS
from persist.schema import Item, Message

MARKER = "\x00SUFFIX\x00"


def allowed_tokens(tokenizer: Any) -> list[int]:
    """Token ids that decode to printable ASCII (no special tokens) and encode back to themselves."""
    special = set(tokenizer.all_special_ids)
    out = []
    for i in range(len(tokenizer)):
        if i in special:
            continue
        text = tokenizer.decode([i])
        if text and text.isascii() and text.isprintable() and tokenizer.encode(text, add_special_tokens=False) == [i]:
            out.append(i)
    return out


@dataclass
class Pieces:
    """One train item's sequence around the suffix: prefix ids, the ids after the suffix up to the reply, and
    the two references' ids (first aligned, first misaligned) with their byte lengths."""

    before: list[int]
    after: list[int]
    refs: list[tuple[list[int], int]]


def pieces(target: Any, item: Item) -> Pieces:
    chat = list(item.chat)
    chat[-1] = {**chat[-1], "content": f"{chat[-1]['content']} {MARKER}"}
    text = target.render(chat)
    head, tail = text.split(MARKER)
    tok = target.tokenizer
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    refs = [(enc(r), max(1, len(r.encode("utf-8")))) for r in (item.aligned[0], item.misaligned[0])]
    return Pieces(before=enc(head), after=enc(tail), refs=refs)


def sequences(batch: list[Pieces], suffixes: list[list[int]]) -> tuple[list[list[int]], list[tuple[int, int, int]]]:
    """Every (suffix, item, reference) sequence, and for each where its reference starts, its length and sign."""
    seqs, spans = [], []
    for s in suffixes:
        for p in batch:
            for k, (ref, _) in enumerate(p.refs):
                prefix = p.before + s + p.after
                seqs.append(prefix + ref)
                spans.append((len(prefix), len(ref), k))
    return seqs, spans


def losses(model: Any, batch: list[Pieces], suffixes: list[list[int]], pad: int, autocast: bool) -> list[float]:
    """The loss of each suffix (see the module docstring), exactly, in one batched forward."""
    import torch

    seqs, spans = sequences(batch, suffixes)
    width = max(len(x) for x in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, x in enumerate(seqs):
        ids[r, : len(x)] = torch.tensor(x)
        mask[r, : len(x)] = 1
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits.float()
    logp = torch.log_softmax(logits, -1)
    per = len(batch) * 2
    out = []
    for j in range(len(suffixes)):
        total = 0.0
        for r in range(j * per, (j + 1) * per):
            start, n, k = spans[r]
            tgt = ids[r, start: start + n].to(logp.device)
            lp = logp[r, start - 1: start - 1 + n].gather(1, tgt[:, None]).sum().item()
            nbytes = batch[(r - j * per) // 2].refs[k][1]
            total += (lp if k == 0 else -lp) / nbytes
        out.append(total / len(batch))
    return out


def token_gradients(model: Any, batch: list[Pieces], suffix: list[int], autocast: bool) -> Any:
    """d loss / d one-hot(suffix): (length, vocab)."""
    import torch

    emb = model.get_input_embeddings()
    one_hot = torch.zeros(len(suffix), emb.weight.shape[0], device=emb.weight.device, dtype=emb.weight.dtype)
    one_hot[torch.arange(len(suffix)), torch.tensor(suffix)] = 1.0
    one_hot.requires_grad_(True)
    total = 0.0
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        for p in batch:
            for k, (ref, nbytes) in enumerate(p.refs):
                ids = torch.tensor(p.before + suffix + p.after + ref, device=emb.weight.device)
                embeds = emb(ids).detach()
                s0 = len(p.before)
                embeds = torch.cat([embeds[:s0], one_hot @ emb.weight, embeds[s0 + len(suffix):]])[None]
                logits = model(inputs_embeds=embeds).logits[0].float()
                start = len(ids) - len(ref)
                lp = torch.log_softmax(logits[start - 1: len(ids) - 1], -1).gather(
                    1, ids[start:, None]).sum()
                total = total + (lp if k == 0 else -lp) / nbytes
    (total / len(batch)).backward()
    return one_hot.grad


@dataclass
class PreparedSuffix:
    attack: Any
    text: str
    compute: dict[str, float]

    def describe(self) -> dict[str, Any]:
        """What the run header and the report keep of the optimisation (the loss curve stays in suffix.json)."""
        return {"suffix": self.text}

    def transform(self, item: Item) -> list[Any]:
        from persist.schema import Variant

        messages = replace_last_user(item, f"{item.messages[-1].content} {self.text}")
        return [Variant(item=item, messages=messages, attack=self.attack.name, attack_version=self.attack.version,
                        params=self.attack.params(), index=0)]


@ATTACKS.register
@dataclass(frozen=True)
class UniversalSuffix(Attack):
    name = "gcg-suffix"
    version = "1"
    description = ("white-box: one adversarial suffix optimised by greedy coordinate gradient on the train half "
                   "toward the misaligned references, evaluated on held-out items; source=other: transfer")
    split: ClassVar[bool] = True
    steps: int = 40
    length: int = 12
    topk: int = 64
    candidates: int = 16
    batch_items: int = 2
    seed: int = 0
    source: str = "self"

    def __post_init__(self) -> None:
        if self.source not in ("self", "other"):
            raise ConfigError(f"gcg-suffix source={self.source!r}: self (optimise against this model) or other "
                              "(the other model's suffix: transfer)")
        if min(self.steps, self.length, self.topk, self.candidates, self.batch_items) < 1:
            raise ConfigError("gcg-suffix steps, length, topk, candidates and batch_items must be >= 1")

    def variants(self, item: Item) -> list[tuple[tuple[Message, ...], str]]:
        raise ConfigError("gcg-suffix is optimised against a model first: run it through persist attack / study")

    def prepare(self, ctx: Any) -> PreparedSuffix:
        folder = Path(ctx.other if self.source == "other" else ctx.folder)
        path = folder / "suffix.json"
        if self.source == "other":
            if not path.is_file():
                raise ConfigError(f"gcg-suffix source=other: the {ctx.other_role} model has no optimised suffix; "
                                  "request gcg-suffix (source=self) in the same run")
            saved = json.loads(path.read_text())
            return PreparedSuffix(self, saved["text"], {"forward_tokens": 0.0, "backward_tokens": 0.0,
                                                         "seconds": 0.0, "transferred_from": ctx.other_role})
        if path.is_file():
            saved = json.loads(path.read_text())
            return PreparedSuffix(self, saved["text"], saved["compute"])
        result = self.optimise(live_target(ctx.target), ctx.train)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / ".suffix.json.tmp"
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(path)
        return PreparedSuffix(self, result["text"], result["compute"])

    def optimise(self, target: Any, train: list[Item]) -> dict[str, Any]:
        import torch

        if not hasattr(target, "model"):
            raise ConfigError("gcg-suffix needs local weights (white-box), not an endpoint")
        if not train:
            raise ConfigError("gcg-suffix: no train items (raise --limit)")
        t0 = time.perf_counter()
        model, tok = target.model, target.tokenizer
        autocast = model.device.type == "cpu" and torch.backends.mkldnn.is_available() and \
            torch.ops.mkldnn._is_mkldnn_bf16_supported()
        rng = random.Random(self.seed)
        torch.manual_seed(self.seed)
        allowed = allowed_tokens(tok)
        allowed_mask = torch.full((model.get_input_embeddings().weight.shape[0],), float("inf"))
        allowed_mask[torch.tensor(allowed)] = 0.0
        exclam = tok.encode(" !", add_special_tokens=False)
        suffix = (exclam * self.length)[: self.length] if len(exclam) == 1 else [allowed[0]] * self.length
        items = [pieces(target, it) for it in train]
        pad = tok.pad_token_id
        best, best_loss, curve = list(suffix), None, []
        fwd = bwd = 0
        for _step in range(self.steps):
            batch = rng.sample(items, min(self.batch_items, len(items)))
            grad = token_gradients(model, batch, suffix, autocast)
            bwd += sum(len(p.before) + len(suffix) + len(p.after) + len(r) for p in batch for r, _ in p.refs)
            scores = grad.float().cpu() + allowed_mask
            top = (-scores).topk(self.topk, dim=1).indices  # most negative gradient: loss falls most
            cands = [list(suffix)]
            for _ in range(self.candidates):
                pos = rng.randrange(self.length)
                cand = list(suffix)
                cand[pos] = int(top[pos, rng.randrange(self.topk)])
                if tok.encode(tok.decode(cand), add_special_tokens=False) == cand:
                    cands.append(cand)
            values = losses(model, batch, cands, pad, autocast)
            fwd += sum(len(x) for x in sequences(batch, cands)[0])
            j = min(range(len(cands)), key=lambda k: values[k])
            suffix = cands[j]
            curve.append(values[j])
            probe = items[: min(len(items), 8)]  # a fixed set, so the best suffix is judged on one yardstick
            whole = losses(model, probe, [suffix], pad, autocast)[0]
            fwd += sum(len(x) for x in sequences(probe, [suffix])[0])
            if best_loss is None or whole < best_loss:
                best, best_loss = list(suffix), whole
        seconds = time.perf_counter() - t0
        return {"text": tok.decode(best), "ids": best, "loss": best_loss, "curve": curve,
                "compute": {"forward_tokens": float(fwd), "backward_tokens": float(bwd), "seconds": seconds,
                            "steps": float(self.steps), "train_items": float(len(train))}}
