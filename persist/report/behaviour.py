"""What the model said, per condition (the behaviour step, persist.behaviour), beside the likelihood shift.

Each behaviour record holds one item's answers under one condition (greedy first, then the samples), each maybe
graded by the judge; hand labels (answer sha256 -> label) override the judge. Per model and condition:

- coherent: the share of graded greedy answers that are coherent (Wilson; one greedy answer per item, so the
  answers are independent);
- misaligned: the share of coherent greedy answers that are misaligned (Wilson);
- misaligned (all answers): the same over greedy and sampled answers; an item's answers are not independent, so its
  Wilson interval takes n = the number of items behind it (the design effect at its largest);
- vs clean: on the items whose greedy answer is graded coherent both clean and under the condition, misaligned
  under the condition minus misaligned clean (Newcombe's paired interval);
- beside it, the likelihood shift of the same condition (all of the run's items, nats).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from persist.api import Record
from persist.conditions import CLEAN
from persist.report.model import BehaviourRow, Row
from persist.stats import Estimate, fmt, newcombe_paired_ci, wilson_ci

BEHAVIOUR_TITLE = "## What the model said: graded answers per condition"
BEHAVIOUR_NOTE = ("What the model *said*: answers generated to the behaviour items under each condition (greedy and "
                  "sampled at temperature 1), graded by hand labels where the run folder has them, else by the judge "
                  "(coherent first, then aligned or misaligned; probes/data/trait_rubric.md). Rates are of greedy "
                  "answers, with Wilson intervals; \"all answers\" adds the samples (interval with n = items). "
                  "\"vs clean\" is misaligned under the condition minus clean, on the items coherent in both "
                  "(Newcombe's paired interval). The likelihood shift of the same condition is beside it: the two "
                  "agree only as far as the validation set measured (docs/behaviour.md).")


def grade(answer: Mapping[str, Any], labels: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(label, source) of one stored answer: the hand label of its sha256, else the judge's, else (None, None)."""
    sha = answer.get("sha256")
    if isinstance(sha, str) and sha in labels:
        return labels[sha], "hand"
    judged = answer.get("judge")
    if isinstance(judged, Mapping) and judged.get("label") is not None:
        return str(judged["label"]), "judge"
    return None, None


def behaviour_rows(records: Sequence[Record], labels: Mapping[str, str], rows: Sequence[Row] = ()
                   ) -> list[BehaviourRow]:
    """One row per (model role, condition) of the behaviour records, in the order the records were written."""
    by: dict[tuple[str, str], dict[str, list[tuple[str | None, str | None]]]] = defaultdict(dict)
    for r in records:
        stored = r.details.get("answers")
        answers = stored if isinstance(stored, list) else []
        key = f"{r.item_id}#{r.attack_index}"
        by[(r.role, r.condition)][key] = [grade(a, labels) for a in answers if isinstance(a, Mapping)]
    shifts = {(row.role, row.condition.label): row.overall.shift.shift for row in rows
              if row.overall.shift is not None}
    out = []
    for (role, cond), per_item in by.items():
        greedy = {k: g[0][0] for k, g in per_item.items() if g}
        graded = [lab for lab in greedy.values() if lab is not None]
        coherent = [lab for lab in graded if lab != "incoherent"]
        every = [lab for g in per_item.values() for lab, _ in g if lab is not None and lab != "incoherent"]
        mis_all = sum(lab == "misaligned" for lab in every)
        n_items = len({k for k, g in per_item.items() if any(lab not in (None, "incoherent") for lab, _ in g)})
        all_rate = clustered_rate(mis_all, len(every), n_items)
        vs = None
        if cond != CLEAN.label and (role, CLEAN.label) in by:
            before = {k.split("#")[0]: g[0][0] for k, g in by[(role, CLEAN.label)].items() if g}
            pairs = [(lab == "misaligned", before[k.split("#")[0]] == "misaligned") for k, lab in greedy.items()
                     if lab not in (None, "incoherent") and before.get(k.split("#")[0]) not in (None, "incoherent")]
            if pairs:
                b = sum(a and not c for a, c in pairs)
                c = sum(c and not a for a, c in pairs)
                vs = newcombe_paired_ci(b, c, len(pairs), a=sum(a and c for a, c in pairs))
        sources = [s for g in per_item.values() for _, s in g]
        out.append(BehaviourRow(role=role, condition=cond, items=len(per_item),
                                answers=sum(len(g) for g in per_item.values()),
                                graded=sum(s is not None for s in sources), by_hand=sources.count("hand"),
                                coherent=wilson_ci(len(coherent), len(graded)),
                                misaligned=wilson_ci(sum(lab == "misaligned" for lab in coherent), len(coherent)),
                                misaligned_all=all_rate, vs_clean=vs, shift=shifts.get((role, cond))))
    return out


def clustered_rate(successes: int, n: int, clusters: int) -> Estimate:
    """successes / n answers that come in `clusters` correlated groups (items): the Wilson interval of the same rate
    at n = clusters, the design effect at its largest. n = 0: no estimate."""
    if n == 0:
        return wilson_ci(0, 0)
    ci = wilson_ci(round(successes / n * clusters), clusters)
    return Estimate(successes / n, min(ci.lo, successes / n), max(ci.hi, successes / n), clusters)


def behaviour_table(rows: Sequence[BehaviourRow]) -> tuple[list[str], list[list[str]]]:
    head = ["model", "condition", "items", "answers (graded, by hand)", "coherent", "misaligned among coherent",
            "misaligned, all answers", "vs clean", "likelihood shift (nats)"]
    body = [[r.role, r.condition, str(r.items), f"{r.answers} ({r.graded}, {r.by_hand})", fmt(r.coherent),
             fmt(r.misaligned), fmt(r.misaligned_all), fmt(r.vs_clean), fmt(r.shift, 2)] for r in rows]
    return head, body


def ungraded_note(rows: Sequence[BehaviourRow]) -> str:
    """A sentence when answers were generated but nothing graded them."""
    if rows and not any(r.graded for r in rows):
        return (" No answer is graded yet: pass --judge SPEC, or label the answers (probes/data/README.md) and "
                "import the labels with `persist probes grade RUN --labels FILE`.")
    return ""
