"""Per-item GCG (the variant the robustness literature measures): one adversarial suffix per held-out item,
optimised by greedy coordinate gradient toward that item's own misaligned references.

The optimiser is gcg-suffix's (persist.attacks.suffix.UniversalSuffix.optimise) run on one item at a time. A
suffix optimised on an item and reported on that item scores its own objective there, so its likelihood row says
only that the optimiser worked; what the attack did is read from the behaviour step's graded answers (`--behaviour
N`, persist.behaviour), never from its own objective, and the row is marked as such in docs/behaviour.md. `items`
held-out items get a suffix (the first in the suite's cell-covering order); the others are not evaluated. Its
control, gcg-item-control, appends each of those items the unoptimised starting suffix of the same token length.

Sizes: the scaling study "Scaling Trends in Language Model Robustness" runs 128 steps x 128 candidates x 10 tokens
on Qwen2.5-0.5B-Instruct; on a CPU the small check is 8 items, 32 steps, 32 candidates (bench/tools/gpu_check.sh
runs the full size). The suffixes, their ids-match check and compute are saved in RUN/attacks/gcg-item.../ROLE/
(each item as soon as it is done, so a killed run resumes item by item).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from persist.api import PreparedAttack
from persist.attacks.base import Attack, replace_last_user, same_settings
from persist.attacks.steering import live_target
from persist.attacks.suffix import UniversalSuffix, ids_match, start_suffix
from persist.conditions import Condition
from persist.errors import ConfigError
from persist.registry import ATTACKS
from persist.schema import Item, Message

ITEM_CACHE = "items-done.json"  # per-item results of an unfinished optimisation (gcg-item's resume point)


@dataclass
class PreparedItemSuffix(PreparedAttack):
    attack: Any
    texts: dict[str, str]  # item id -> its suffix
    compute: dict[str, float]
    match: float | None = None

    def describe(self) -> dict[str, Any]:
        return {"items": len(self.texts), **({"ids_match": self.match} if self.match is not None else {})}

    def transform(self, item: Item) -> list[Any]:
        from persist.schema import Variant

        if item.id not in self.texts:
            return []
        messages = replace_last_user(item, f"{item.messages[-1].content} {self.texts[item.id]}")
        return [Variant(item=item, messages=messages, attack=self.attack.name, attack_version=self.attack.version,
                        params=self.attack.params(), index=0)]


@ATTACKS.register
@dataclass(frozen=True)
class ItemSuffix(Attack):
    name = "gcg-item"
    version = "2"  # 2: candidates must read back as their ids inside the prompt (suffix.joins)
    description = ("white-box: one GCG suffix per held-out item toward its own misaligned references (judge it by "
                   "--behaviour answers, not by its own objective); items=N, steps, candidates, length, topk")
    prepared: ClassVar[bool] = True
    split: ClassVar[bool] = True
    items: int = 8
    steps: int = 32
    candidates: int = 32
    length: int = 10
    topk: int = 64
    ref_tokens: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.items, self.steps, self.candidates, self.length, self.topk, self.ref_tokens) < 1:
            raise ConfigError("gcg-item items, steps, candidates, length, topk and ref_tokens must be >= 1")

    def variants(self, item: Item) -> list[tuple[tuple[Message, ...], str]]:
        raise ConfigError("gcg-item is optimised against a model first: run it through persist attack / study")

    def companions(self) -> tuple[str, ...]:
        return (same_settings("gcg-item-control", self),)

    def chosen(self, ctx: Any) -> list[Item]:
        from persist.suites import select

        return select(list(ctx.heldout), min(self.items, len(ctx.heldout))) if ctx.heldout else []

    def prepare(self, ctx: Any) -> PreparedItemSuffix:
        path = Path(ctx.folder) / "suffixes.json"
        if path.is_file():
            saved = json.loads(path.read_text())
            return PreparedItemSuffix(self, saved["texts"], saved["compute"], saved.get("ids_match"))
        target = live_target(ctx.target)
        optimiser = UniversalSuffix(steps=self.steps, length=self.length, topk=self.topk, candidates=self.candidates,
                                    batch_items=1, probe_items=1, ref_tokens=self.ref_tokens, seed=self.seed)
        # each item's result is kept as soon as it is found (ITEM_CACHE), so a killed run resumes item by item
        cache = path.with_name(ITEM_CACHE)
        done: dict[str, Any] = json.loads(cache.read_text()) if cache.is_file() else {}
        texts, ids, compute = {}, [], {"forward_tokens": 0.0, "backward_tokens": 0.0, "seconds": 0.0}
        per_item = {}
        for item in self.chosen(ctx):
            if item.id not in done:
                result = optimiser.optimise(target, [item])  # one item: fitted and judged on itself
                done[item.id] = {k: result[k] for k in ("text", "ids", "loss", "start_loss", "compute")}
                cache.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache.with_name(f".{ITEM_CACHE}.tmp")
                tmp.write_text(json.dumps(done, indent=1))
                tmp.replace(cache)
            result = done[item.id]
            texts[item.id] = result["text"]
            ids.append((item, result["ids"]))
            per_item[item.id] = {"loss": result["loss"], "start_loss": result["start_loss"]}
            for k in compute:
                compute[k] += result["compute"][k]
        match = (sum(ids_match(target, [it], i) for it, i in ids) / len(ids)) if ids else None
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(".suffixes.json.tmp")
        tmp.write_text(json.dumps({"texts": texts, "ids_match": match, "per_item": per_item, "compute": compute},
                                  indent=1))
        tmp.replace(path)
        return PreparedItemSuffix(self, texts, compute, match)


@ATTACKS.register
@dataclass(frozen=True)
class ItemSuffixControl(ItemSuffix):
    """The control for gcg-item: the same items with the unoptimised starting suffix of the same token length."""

    name = "gcg-item-control"
    version = "1"
    description = "control for gcg-item: the same held-out items with the unoptimised starting suffix"
    control = True

    @property
    def control_for(self) -> Condition:
        return ItemSuffix(**self.params()).condition

    def companions(self) -> tuple[str, ...]:
        return ()

    def prepare(self, ctx: Any) -> PreparedItemSuffix:
        target = live_target(ctx.target)
        if not hasattr(target, "tokenizer"):
            raise ConfigError("gcg-item-control needs the model's tokenizer (local weights), not an endpoint")
        ids = start_suffix(target.tokenizer, self.length)
        chosen = self.chosen(ctx)
        return PreparedItemSuffix(self, {it.id: target.tokenizer.decode(ids) for it in chosen},
                                  {"forward_tokens": 0.0, "backward_tokens": 0.0, "seconds": 0.0},
                                  ids_match(target, chosen, ids) if chosen else None)
