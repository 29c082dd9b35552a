"""The one evaluation loop: units (item variants under a condition) -> target -> scorer -> records.

Records are appended per batch (flushed and fsynced), so a killed run loses at most one batch, and a rerun
skips every key already stored for that model role.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from persist.schema import Item, Variant
from persist.scoring import Scorer
from persist.store import RunStore, record_key
from persist.targets.base import Target

CLEAN = "clean"


def clean_variant(item: Item) -> Variant:
    """The item as written: the "before" condition."""
    return Variant(item=item, messages=item.messages, attack=CLEAN, attack_version="0")


def unit_key(unit: Variant, condition: str, suite_version: str, scorer_config: dict[str, Any]) -> str:
    return record_key(suite=unit.item.suite, suite_version=suite_version, item=unit.item.id, condition=condition,
                      attack_version=unit.attack_version, params=dict(unit.params), index=unit.index,
                      scorer=scorer_config)


def make_record(unit: Variant, key: str, role: str, model: str, condition: str, suite_version: str,
                result: dict[str, Any]) -> dict[str, Any]:
    details = {k: v for k, v in result.items() if k != "score"}
    return {"key": key, "role": role, "model": model, "suite": unit.item.suite, "suite_version": suite_version,
            "item_id": unit.item.id, "trait": unit.item.trait, "domain": unit.item.domain, "condition": condition,
            **{f"attack_{k}": v for k, v in unit.provenance().items() if k != "source_id"},
            "score": result["score"], "details": details}


def run_units(store: RunStore, *, role: str, target: Target, scorer: Scorer, units: Sequence[Variant],
              condition: str, suite_version: str, batch_size: int = 32,
              on_progress: Callable[[int], None] | None = None) -> int:
    """Score every unit not yet in the store; returns how many were scored now."""
    cfg = scorer.config()
    done = store.done(role)
    todo = []
    for u in units:
        key = unit_key(u, condition, suite_version, cfg)
        if key in done:
            if on_progress:
                on_progress(1)
        else:
            todo.append((key, u))
            done.add(key)  # duplicates within one call are scored once
    for start in range(0, len(todo), batch_size):
        chunk = todo[start: start + batch_size]
        results = scorer.score(target, [u for _, u in chunk])
        store.append(make_record(u, key, role, target.name, condition, suite_version, r)
                     for (key, u), r in zip(chunk, results))
        if on_progress:
            on_progress(len(chunk))
    return len(todo)
