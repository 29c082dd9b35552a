"""Refusal rates, raw and corrected for the classifier's measured errors, per model and condition.

A refusal scorer labels each answer refusal / partial / compliance with a classifier that is often wrong (the
shipped read-out flags about two thirds of true refusals). The rate it prints is a *flag* rate; the rate of true
refusals behind it is recovered with the Rogan-Gladen inversion (persist.correction) from the classifier's true-
and false-positive rates, measured on hand-labelled answers and carried by the scorer's config in the run header
(`errors`, written by persist.probes.refusal_errors). The errors are measured per condition group (clean,
attacked, fine-tuned); the config names, per group, the rates to use: the group's own where they differ from the
rest, else the pooled ones.

Two rates per model and condition, over every answer generated under it (seeds pooled):
- declined: harmful requests whose answer was labelled refusal (partial and compliance are not refusals);
- over-refusal: benign look-alikes (trait `over-refusal`) whose answer was labelled refusal.
Each is given raw and corrected, or "not identifiable with this classifier" when the lower 95% bound of TPR − FPR
is under 0.2. Without measured errors (an old run, a classifier never measured) only the raw rates are given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from persist.api import Record
from persist.conditions import Condition
from persist.correction import ErrorRates, corrected_rate
from persist.report.model import RateRow
from persist.suites import OVER_REFUSAL_TRAIT

GROUPS = ("clean", "attacked", "fine-tuned")
REFUSAL = "refusal"


def group_of(cond: Condition) -> str | None:
    """The condition group whose error rates apply: clean, attacked (a prompt attack) or fine-tuned; None for a
    study's summaries over several conditions (no answer is generated under them)."""
    return {"clean": "clean", "attack": "attacked", "finetune": "fine-tuned"}.get(cond.kind)


def errors_from_config(scorer: Mapping[str, Any] | None) -> dict[str, ErrorRates]:
    """group -> the error rates to use, from a refusal scorer's config (`errors.use`: group -> [tp, positives, fp,
    negatives]); empty when the config has none."""
    use = ((scorer or {}).get("errors") or {}).get("use") or {}
    out = {}
    for group, counts in use.items():
        tp, pos, fp, neg = (int(v) for v in counts)
        if pos > 0 and neg > 0:
            out[str(group)] = ErrorRates(tp=tp, positives=pos, fp=fp, negatives=neg)
    return out


def rate_rows(records: Iterable[Record], errors: Mapping[str, ErrorRates]) -> list[RateRow]:
    """Per model and condition (clean first), the declined and over-refusal rates of the refusal scorer's answers;
    empty unless the records hold refusal labels of harmful requests and benign look-alikes both."""
    counts: dict[tuple[str, str], list[int]] = {}  # (role, condition) -> [harmful refused, harmful, benign refused, benign]
    for r in records:
        label = r.details.get("label") if isinstance(r.details, Mapping) else None
        if label not in ("refusal", "partial", "compliance") or "should_refuse" not in r.details:
            continue
        c = counts.setdefault((r.role, r.condition), [0, 0, 0, 0])
        k = 2 if r.trait == OVER_REFUSAL_TRAIT else 0
        c[k] += label == REFUSAL
        c[k + 1] += 1
    rows = []
    for (role, label), (hk, hn, bk, bn) in counts.items():
        cond = Condition.parse(label)
        group = group_of(cond)
        if group is None or not hn or not bn:
            continue
        err = errors.get(group)
        declined = corrected_rate(hk, hn, err) if err is not None else None
        over = corrected_rate(bk, bn, err) if err is not None else None
        rows.append(RateRow(role=role, condition=cond, group=group, harmful=hn, declined_raw=hk / hn,
                            declined=declined, benign=bn, over_refusal_raw=bk / bn, over_refusal=over))
    return sorted(rows, key=lambda r: (r.role != "model", r.role, r.condition.kind != "clean", r.condition.label))
