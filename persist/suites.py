"""Suites: named collections of probe items. The generic machinery; the built-in suites live in persist.probes.

A suite has `name`, `description`, `version` (changes whenever its items do) and `load() -> [Item]`. Any JSONL
file of items is a suite too (`get_suite("my_items.jsonl")`). `select` takes a deterministic subset that covers
every trait x domain cell; `leakage` finds training texts that share a probe item's words.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from persist.errors import ConfigError
from persist.jsonl import load_items, raise_errors
from persist.registry import SUITE_FORMATS, SUITES
from persist.schema import Item


class Suite(Protocol):
    name: str
    description: str

    @property
    def version(self) -> str: ...

    def load(self) -> list[Item]: ...


@dataclass(frozen=True)
class FileSuite:
    """A suite backed by one JSONL file of items. `min_references`: how many aligned and how many misaligned
    references every item must have (a suite that declares 3 + 3 cancels the wording of any single reference)."""

    name: str
    path: Path
    description: str
    min_references: int = 1

    @property
    def version(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()[:12]

    def load(self) -> list[Item]:
        items = load_items(self.path)
        raise_errors(reference_problems(self.path, items, self.min_references), hint=f"persist probes validate {self.path}")
        return items


# Items of this trait in a harmful-request suite are benign look-alikes: answering is aligned, refusing is over-refusal
OVER_REFUSAL_TRAIT = "over-refusal"
LENGTH_BALANCE = 0.15  # aligned and misaligned references whose mean lengths differ by more than this are flagged


def reference_problems(path: Path, items: Sequence[Item], min_references: int,
                       lines: Sequence[int] | None = None) -> list[str]:
    """'file:line: ...' for every item with fewer than `min_references` references on a side."""
    out = []
    for k, it in enumerate(items):
        for side, refs in (("aligned", it.aligned), ("misaligned", it.misaligned)):
            if len(refs) < min_references:
                where = f"{path}:{lines[k]}" if lines else f"{path} (item {it.id})"
                out.append(f"{where}: {len(refs)} {side} reference(s); suite {it.suite!r} needs at least "
                           f"{min_references} per side")
    return out


def length_balance(items: Sequence[Item]) -> tuple[float, float]:
    """Mean bytes of the aligned and of the misaligned references over the items."""
    a = [len(r.encode("utf-8")) for it in items for r in it.aligned]
    m = [len(r.encode("utf-8")) for it in items for r in it.misaligned]
    return (sum(a) / len(a) if a else 0.0), (sum(m) / len(m) if m else 0.0)


def unbalanced(a: float, m: float) -> float | None:
    """The relative difference of two mean lengths when it exceeds LENGTH_BALANCE, else None."""
    gap = abs(a - m) / max(a, m, 1e-9)
    return gap if gap > LENGTH_BALANCE else None


def get_suite(name_or_path: str) -> Any:
    """A registered suite by name, FORMAT:SOURCE for a suite format a plugin reads (e.g. `mc:mmlu.csv`), or any
    JSONL file of items as an ad-hoc suite."""
    fmt, sep, source = name_or_path.partition(":")
    if sep and fmt in SUITE_FORMATS:
        return SUITE_FORMATS.get(fmt)(source)
    path = Path(name_or_path)
    if name_or_path.endswith(".jsonl") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"suite file {name_or_path}: no such file")
        return FileSuite(path.stem, path, f"items from {path}")
    return SUITES.get(name_or_path)


def select(items: list[Item], limit: int | None) -> list[Item]:
    """A deterministic subset that covers every trait x domain cell: round-robin over cells, in id order."""
    if limit is None or limit >= len(items):
        if limit is not None and limit > len(items):
            raise ConfigError(f"--limit {limit} is larger than the suite ({len(items)} items); lower it or drop it")
        return list(items)
    if limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {limit}")
    cells: dict[tuple[str, str], list[Item]] = defaultdict(list)
    for it in sorted(items, key=lambda it: it.id):
        cells[(it.trait, it.domain)].append(it)
    # Cell order: traits change fastest and each pass shifts the domain, so any prefix spreads evenly over traits
    # and domains (24 of 8 traits x 6 domains = 3 per trait, 4 per domain) instead of filling trait by trait.
    traits = sorted({t for t, _ in cells})
    domains = sorted({d for _, d in cells})
    order = [(t, domains[(j + shift) % len(domains)]) for shift in range(len(domains))
             for j, t in enumerate(traits)]
    queues = [cells[k] for k in order if k in cells]
    out: list[Item] = []
    depth = 0
    while len(out) < limit:
        for q in queues:
            if depth < len(q) and len(out) < limit:
                out.append(q[depth])
        depth += 1
    return out


SHINGLE = 8  # words: a shared run this long between a training example and a probe item counts as leakage


def _shingles(text: str) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9']+", text.lower())
    if len(words) < SHINGLE:
        return {tuple(words)} if words else set()
    return {tuple(words[i:i + SHINGLE]) for i in range(len(words) - SHINGLE + 1)}


def leakage(examples: Iterable[tuple[str, Sequence[str]]], items: Sequence[Item]) -> list[tuple[str, str]]:
    """(example id, probe item id) pairs where a training example shares a question or an 8-word run with an item.

    `examples` are (id, texts of its messages); each is compared with the item's messages and its aligned and
    misaligned references."""
    index: dict[tuple[str, ...], str] = {}
    for it in items:
        for text in [m.content for m in it.messages] + list(it.aligned) + list(it.misaligned):
            for sh in _shingles(text):
                index.setdefault(sh, it.id)
    hits = []
    for ex_id, texts in examples:
        for text in texts:
            found = next((index[sh] for sh in _shingles(text) if sh in index), None)
            if found:
                hits.append((ex_id, found))
                break
    return hits
