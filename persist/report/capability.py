"""The capability check in a report: multiple-choice accuracy per condition on each model's subjects above chance,
and each condition's verdict against the utility bound (persist.capability runs the check)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from scipy.stats import binom

from persist.api import Record
from persist.conditions import CLEAN, Condition
from persist.report.compare import compare
from persist.report.items import number
from persist.report.model import BROKE, CANNOT_RULE_OUT, NO_SUBJECT, WITHIN, CapabilityRow, SubjectRow
from persist.stats import wilson_ci

ABOVE_CHANCE_P = 0.05  # one-sided exact binomial test of the clean accuracy against chance


def capability_rows(records: list[Record], epsilon: float) -> list[CapabilityRow]:
    """Accuracy before and under every condition (the capability records of a run) on each model's subjects above
    chance, and each condition's verdict against the bound (CapabilityRow)."""
    if not records:
        return []
    out = []
    subjects = capability_subjects(records)
    for role, subs in subjects.items():
        keep = {s.subject for s in subs if s.above_chance}
        mine = [r for r in records if r.role == role and (r.trait in keep or not keep)]
        for r in compare(mine).rows:
            c = r.overall
            loss = None if not c.before.value > 0 else 1 - c.after.value / c.before.value
            bound = epsilon * c.before.value
            if not keep:
                verdict = NO_SUBJECT
            elif c.drop.lo > bound:
                verdict = BROKE
            elif c.drop.hi <= bound:
                verdict = WITHIN
            else:
                verdict = CANNOT_RULE_OUT
            out.append(CapabilityRow(role=r.role, condition=r.condition, change=c, loss=loss,
                                     broke=verdict == BROKE, verdict=verdict, bound=bound, subjects=subs))
    return out


def capability_subjects(records: list[Record], clean: Condition = CLEAN) -> dict[str, list[SubjectRow]]:
    """Per model, each subject's clean accuracy against chance (1 / the item's options, from the choice scorer)."""
    acc: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r.condition == clean.label and r.score is not None:
            options = number(r, "options")
            acc[r.role][r.trait].append((float(r.score), 1 / options if options else 0.0))
    out: dict[str, list[SubjectRow]] = {}
    for role, per in acc.items():
        out[role] = []
        for subject, values in sorted(per.items()):
            chance = float(np.mean([c for _, c in values]))
            correct = int(round(sum(s for s, _ in values)))
            before = wilson_ci(correct, len(values))
            # above chance: the one-sided exact binomial test of "correct no more often than chance" rejects at 5%
            p = float(binom.sf(correct - 1, len(values), chance))
            out[role].append(SubjectRow(subject=subject, n=len(values), chance=chance, before=before,
                                        above_chance=p < ABOVE_CHANCE_P))
    return out
