"""Attacks that need the model before they can attack it: optimised and white-box attacks.

An attack whose class declares `prepared = True` is prepared once per model, against that model: the context gives it the
loaded target, the train split of the items, a folder in the run for its artefacts (an optimised suffix, a
steering direction: saved there, so a resumed run loads them instead of optimising again), the same folder of the
other model (for transfer variants), the scorer (for attacker feedback) and the load options (to open an attacker
model). It returns a *prepared* attack: `transform(item)` for the held-out items, optionally `wrap(target)` (a
representation attack changes activations, not prompts), and `compute` (what preparing it cost).

Attacks whose class sets `split = True` are optimised on a train half of the items and evaluated only on the
other half (`split_items`, by a hash of the item id: the same items on every machine and in every run).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from persist.api import Attack, PrepareContext  # noqa: F401  (PrepareContext re-exported)
from persist.schema import Item


def is_heldout(item_id: str) -> bool:
    """Which half an item falls in: the parity of a hash of its id (stable everywhere)."""
    return bool(int(hashlib.sha256(f"split:{item_id}".encode()).hexdigest(), 16) % 2)


def split_items(items: list[Item]) -> tuple[list[Item], list[Item]]:
    """(train, held-out): each item by is_heldout; disjoint, and stable everywhere."""
    train: list[Item] = []
    heldout: list[Item] = []
    for it in items:
        (heldout if is_heldout(it.id) else train).append(it)
    return train, heldout


def artefact_folder(run: Path, attack: Attack, role: str) -> Path:
    """RUN/attacks/NAME[-params]/ROLE; a transfer variant (source=other) shares its source's folder, and so do
    settings of one attack that reuse its artefacts (the class's `shared_params`, e.g. steering's alpha)."""
    skip = set(attack.shared_params)
    params = {k: v for k, v in attack.params().items() if k not in skip}
    tag = "-".join(f"{k}={v}" for k, v in sorted(params.items()))
    name = re.sub(r"[^A-Za-z0-9._=-]", "_", f"{attack.name}-{tag}" if tag else attack.name)
    return Path(run) / "attacks" / name / role


def needs_model(attack: Attack) -> bool:
    """Prepared against the model itself (a transfer variant only reads the other model's artefacts)."""
    return attack.prepared and not attack.transfers
