"""The one evaluation loop: units (item variants under a condition) -> target -> scorer -> records.

Records are appended per batch (flushed and fsynced), so a killed run loses at most one batch, and a rerun
skips every key already stored for that model role.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from time import perf_counter
from typing import Any

from persist.api import Record, Scorer, ScoreResult
from persist.conditions import CLEAN, Condition
from persist.schema import Item, Variant
from persist.store import RunStore, record_key
from persist.targets.base import Target
from persist.timings import log_time


def clean_variant(item: Item) -> Variant:
    """The item as written: the "before" condition."""
    return Variant(item=item, messages=item.messages, attack=CLEAN.label, attack_version="0")


def unit_key(unit: Variant, condition: Condition, suite_version: str, scorer_config: dict[str, Any]) -> str:
    return record_key(suite=unit.item.suite, suite_version=suite_version, item=unit.item.id,
                      condition=condition.label, attack_version=unit.attack_version, params=dict(unit.params),
                      index=unit.index, scorer=scorer_config)


def make_record(unit: Variant, key: str, role: str, model: str, condition: Condition, suite_version: str,
                result: ScoreResult) -> Record:
    prov = unit.provenance()
    return Record(key=key, role=role, model=model, suite=unit.item.suite, suite_version=suite_version,
                  item_id=unit.item.id, trait=unit.item.trait, domain=unit.item.domain, condition=condition.label,
                  attack=prov["attack"], attack_version=prov["version"], attack_params=prov["params"],
                  attack_index=prov["index"], score=result.score, details=dict(result.details))


class LazyTarget:
    """A target opened on first use, so a finished stage of a resumed run loads no model."""

    def __init__(self, open_fn: Callable[[], Target]) -> None:
        self.open_fn = open_fn
        self.target: Target | None = None

    def get(self) -> Target:
        if self.target is None:
            self.target = self.open_fn()
        return self.target


def run_units(store: RunStore, *, role: str, target: Target | LazyTarget, scorer: Scorer, units: Sequence[Variant],
              condition: Condition, suite_version: str, batch_size: int = 32,
              on_progress: Callable[[int], None] | None = None) -> int:
    """Score every unit not yet in the store; returns how many were scored now.

    Batches are cut from the whole unit list, not from what is left to do, and a batch with any unit missing is
    scored whole (only the missing records are appended). So every record is computed in the same batch as in an
    uninterrupted run, and a resumed run is bit-identical to it (batch composition moves fp32 results by ~1e-6).
    Opening a lazy target and scoring are timed into RUN/timings.jsonl (persist.timings).
    """
    cfg = scorer.config()
    done = store.done(role)
    seen: set[str] = set()
    keyed = []
    for u in units:
        key = unit_key(u, condition, suite_version, cfg)
        if key not in seen:  # duplicates within one call are scored once
            seen.add(key)
            keyed.append((key, u))
    if on_progress and len(keyed) < len(units):
        on_progress(len(units) - len(keyed))
    scored = 0
    seconds = 0.0
    for start in range(0, len(keyed), batch_size):
        chunk = keyed[start: start + batch_size]
        missing = [i for i, (key, _) in enumerate(chunk) if key not in done]
        if missing:
            if isinstance(target, LazyTarget):
                opening = target.target is None
                t0 = perf_counter()
                live = target.get()
                if opening:
                    log_time(store.folder, "load", perf_counter() - t0, role=role, condition=condition.label)
            else:
                live = target
            t0 = perf_counter()
            results = scorer.score(live, [u for _, u in chunk])
            seconds += perf_counter() - t0
            store.append(make_record(chunk[i][1], chunk[i][0], role, live.name, condition, suite_version,
                                     results[i]) for i in missing)
            scored += len(missing)
        if on_progress:
            on_progress(len(chunk))
    if scored:
        log_time(store.folder, "score", seconds, role=role, condition=condition.label,
                 suite=keyed[0][1].item.suite, units=scored)
    return scored
