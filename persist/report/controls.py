"""Attacks beside their several controls: steering against random directions of the same norm, the reversed
direction and the register direction (attacks/steering.py), or any attack whose controls declare a kind.

Per model, on the items the attack and all its controls were evaluated on (steering's held-out half), each
condition's content shift against clean (nats, < 0: toward misaligned), and:
  net             attack - mean of the `random` controls, per item: what the attack's direction does beyond any
                  push of the same size
  register share  (register control - random mean) / (attack - random mean), a ratio of item means with a paired
                  percentile bootstrap (undefined when the net effect is not clearly away from 0): how much of the
                  attack's net effect the register direction alone reproduces
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from persist.api import Record
from persist.conditions import Condition
from persist.report.factorial import deltas, role_order
from persist.report.items import by_seed, item_scores
from persist.report.model import ControlledAttack
from persist.stats import UNBOUNDED, fmt, ratio_ci, tested


def controlled_attacks(records: list[Record], roles: Sequence[str], sets: Iterable[tuple[Condition, Condition, str]],
                       worst_of: Iterable[Condition] = ()) -> list[ControlledAttack]:
    groups: dict[Condition, list[tuple[Condition, str]]] = {}
    for attack, control, kind in sets:
        groups.setdefault(attack, []).append((control, kind))
    if not groups:
        return []
    scores = by_seed(item_scores(records, worst_of))
    out = []
    for role in sorted(roles, key=role_order):
        for attack, controls in groups.items():
            mats = deltas(scores, [role], [attack, *(c for c, _ in controls)], "logodds")
            if mats is None:
                continue
            a, rest = mats[role][0].mean(axis=0), [m.mean(axis=0) for m in mats[role][1:]]
            shifts = [(c, kind, tested(m, bounds=UNBOUNDED)) for (c, kind), m in zip(controls, rest, strict=True)]
            random = [m for (_, kind), m in zip(controls, rest, strict=True) if kind == "random"]
            register = [m for (_, kind), m in zip(controls, rest, strict=True) if kind == "register"]
            base = np.mean(random, axis=0) if random else None
            net = None if base is None else tested(a - base, bounds=UNBOUNDED)
            share = None
            if base is not None and register:
                # a share may be negative (the register direction pushes the other way) or above 1
                share = ratio_ci(-(register[0] - base), -(a - base), valid=None)
            out.append(ControlledAttack(role=role, attack=attack, n=int(a.size), shift=tested(a, bounds=UNBOUNDED),
                                        controls=shifts, net=net, register_share=share))
    return out


CONTROLS_NOTE = ("Each attack beside its controls, on the same items: random directions of the same norm (what any "
                 "push of that size does), the reversed direction and the register direction (casual minus formal "
                 "states of the register-only suite, same norm). net = attack − mean of the random directions; "
                 "register share = (register − random mean) / (attack − random mean). Nats, < 0 = toward misaligned.")


def controls_table(rows: list[ControlledAttack]) -> tuple[list[str], list[list[str]]]:
    head = ["model", "condition", "kind", "n", "content shift", "p"]
    body = []
    for r in rows:
        body.append([r.role, r.attack.label, "attack", str(r.n), fmt(r.shift, 2), f"{r.shift.p:.3f}"])
        for c, kind, t in r.controls:
            body.append([r.role, c.label, f"control: {kind}", str(t.n), fmt(t, 2), f"{t.p:.3f}"])
        if r.net is not None:
            body.append([r.role, r.attack.label, "net: attack − random mean", str(r.net.n), fmt(r.net, 2),
                         f"{r.net.p:.3f}"])
        if r.register_share is not None:
            body.append([r.role, r.attack.label, "share the register direction reproduces", str(r.n),
                         fmt(r.register_share, 2), "–"])
    return head, body
