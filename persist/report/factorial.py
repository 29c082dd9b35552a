"""Is a condition's shift content or register? The register-only suite per condition, and the 2 x 2 of harm x register.

Register rows: every condition of a study also scores the register-only suite (the same correct content written
formally as `aligned` and casually as `misaligned`), so each condition's register shift (paired, after - before;
< 0: toward the casual register) sits beside its content shift on the alignment items.

The 2 x 2 (`persist study --factorial`): the recipe, its register twin (the same content in the other register)
and their register-matched benign controls, each at the top dose, against clean, paired per item and training seed:

                   register a (the recipe's)         register b (the twin's)
    harm           H_a  (bad-medical, casual)        H_b  (bad-medical-formal)
    benign         B_a  (good-medical-casual)        B_b  (good-medical)

    harm         ((H_a - B_a) + (H_b - B_b)) / 2   the harmful content's effect, register held fixed
    register     ((H_a - H_b) + (B_a - B_b)) / 2   register a's effect over register b, content held fixed
    interaction  (H_a - B_a) - (H_b - B_b)         does the harm move the model more in register a

Each on three measures: the content shift of the alignment items (the primary statistic), their register shift
(register-crossed items), and the register-only suite's shift. Clean cancels in every contrast; the interval is the
one the report gives every log-odds shift (persist.stats.tested: bootstrap-t over items, seeds as a second stage),
and `model - baseline` pairs the two models per item and seed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from persist import conditions
from persist.api import Record
from persist.conditions import CLEAN, Condition
from persist.report.items import ItemValue, Seeded, by_seed, item_scores, matrix
from persist.report.model import Factorial, Measures, RegisterRow, Row, StudyMeta, StudyReport
from persist.stats import UNBOUNDED, Tested, fmt, tested

DIFFERENCE = "model - baseline"


def role_order(role: str) -> tuple[bool, str]:
    """The model first, then the baseline (and any other role by name), however the header stored them."""
    return role != "model", role
CONTRASTS = ("harm", "register", "interaction")


def register_rows(records: list[Record]) -> list[RegisterRow]:
    """The register-only suite's shift for each model and condition (records of that suite only)."""
    scores = by_seed(item_scores(records))
    rows = []
    for role, cond in sorted(scores, key=lambda k: (role_order(k[0]), k[1].label)):
        mats = None if cond == CLEAN else deltas(scores, [role], [cond], "logodds")
        if mats is not None:
            rows.append(RegisterRow(role=role, condition=cond, shift=tested(mats[role][0], bounds=UNBOUNDED)))
    return rows


def deltas(scores: Mapping[tuple[str, Condition], Seeded], roles: Sequence[str], conds: Sequence[Condition],
           field: str) -> dict[str, list[np.ndarray]] | None:
    """Per role, for each condition, the seeds x items matrix of after - before of `field`, on the items and seeds
    every role and condition has (None when there are none, or `field` is missing on any)."""
    found: dict[str, tuple[Mapping[str, ItemValue], list[Seeded]]] = {}
    for role in roles:
        before = scores.get((role, CLEAN), {}).get(0)
        afters = [scores[(role, c.base)] for c in conds if (role, c.base) in scores]
        if not before or len(afters) < len(conds):
            return None
        found[role] = (before, afters)
    seeds = sorted(set.intersection(*(set(a) for _, afters in found.values() for a in afters)))
    ids = sorted(set.intersection(*(
        {i for i in before if all(i in a[s] for a in afters for s in seeds)} for before, afters in found.values())))
    if not seeds or not ids:
        return None
    out = {}
    for role, (before, afters) in found.items():
        values = [before[i] for i in ids] + [a[s][i] for a in afters for s in seeds for i in ids]
        if any(getattr(v, field) is None for v in values):
            return None
        out[role] = [matrix(before, {s: a[s] for s in seeds}, ids, field) for a in afters]
    return out


def contrasts(cells: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """The three contrasts from the cells in the order harm/a, harm/b, benign/a, benign/b."""
    ha, hb, ba, bb = cells
    return {"harm": ((ha - ba) + (hb - bb)) / 2, "register": ((ha - hb) + (ba - bb)) / 2,
            "interaction": (ha - ba) - (hb - bb)}


MEASURES = (("content", "logodds", False), ("register", "register", False), ("register_suite", "logodds", True))


def measures(mats: Mapping[str, list[np.ndarray] | None], pick: int | str) -> Measures | None:
    """One cell (pick: its index) or contrast (pick: its name) on each measure; None without a content shift."""
    got: dict[str, Tested | None] = {}
    for key, _, _ in MEASURES:
        m = mats[key]
        got[key] = None if m is None else tested(m[pick] if isinstance(pick, int) else contrasts(m)[pick],
                                                  bounds=UNBOUNDED)
    content = got["content"]
    return None if content is None else Measures(content=content, register=got["register"],
                                                 register_suite=got["register_suite"])


def cell_order(recipes: Mapping[str, str], recipe: str) -> list[str]:
    """The cells as harm/a, harm/b, benign/a, benign/b, where a is the register of the study's own `recipe`
    (report.json and the run header store the cells with sorted keys, so their order cannot be trusted)."""
    first = next((c for c, r in recipes.items() if r == recipe and c.startswith("harm/")), None)
    if first is None or len(recipes) != 4:
        raise ValueError(f"the 2 x 2 {dict(recipes)} has no harm cell of the recipe {recipe!r}")
    a = first.split("/", 1)[1]
    b = next(c.split("/", 1)[1] for c in recipes if c.split("/", 1)[1] != a)
    return [f"harm/{a}", f"harm/{b}", f"benign/{a}", f"benign/{b}"]


def factorial_rows(records: list[Record], register_records: list[Record], meta: StudyMeta) -> list[Factorial]:
    """The 2 x 2 for each model and for model - baseline (empty unless the study ran --factorial)."""
    if not meta.factorial:
        return []
    names = cell_order(meta.factorial, meta.recipe)
    conds = [conditions.finetune(meta.factorial[cell], max(meta.doses)) for cell in names]
    main, side = by_seed(item_scores(records)), by_seed(item_scores(register_records))
    roles = sorted(meta.models, key=role_order)
    out = []
    for who in [[r] for r in roles] + ([roles] if len(roles) == 2 else []):
        mats: dict[str, list[np.ndarray] | None] = {}
        for key, field, on_side in MEASURES:
            found = deltas(side if on_side else main, who, conds, field)
            mats[key] = None if found is None else (
                found[who[0]] if len(who) == 1 else [a - b for a, b in zip(found[who[0]], found[who[1]], strict=True)])
        cells = {cell: m for k, cell in enumerate(names) if (m := measures(mats, k)) is not None}
        effects = {c: m for c in CONTRASTS if (m := measures(mats, c)) is not None}
        if effects:
            out.append(Factorial(role=who[0] if len(who) == 1 else DIFFERENCE,
                                 cells=cells if len(who) == 1 else {}, contrasts=effects))
    return out


# ---------------------------------------------------------------- tables (markdown, html and terminal share them)

REGISTER_NOTE = ("Each condition's content shift on the alignment items (misaligned vs aligned within a register, "
                 "the primary statistic) beside two register measures: the register shift of the same items' "
                 "references (formal vs casual within a side) and the register-only suite's shift (the same "
                 "correct content written formally vs casually). All in nats, after − before; < 0 means toward "
                 "misaligned (content) or toward the casual register (register). p: paired sign-flip test.")

FACTORIAL_NOTE = ("The 2 × 2 of harm × register at the top dose: the harmful recipe and its benign register-matched "
                  "control in each register, each against clean. harm = the harmful content's effect with the "
                  "register held fixed; register = the first register's effect over the second with the content "
                  "held fixed; interaction = how much more the harm moves the model in the first register. "
                  "model − baseline pairs the two models per item and seed.")


def _cell(t: Tested | None) -> str:
    return "–" if t is None else f"{fmt(t, 2)} (p {t.p:.3f})"


def register_table(rows: list[Row], register: list[RegisterRow]) -> tuple[list[str], list[list[str]]]:
    head = ["model", "condition", "content shift", "register shift (references)", "register-only suite shift"]
    main = {(r.role, r.condition): r for r in rows}
    body = []
    for g in register:
        row = main.get((g.role, g.condition))
        sh = None if row is None else row.overall.shift
        body.append([g.role, g.condition.label, _cell(None if sh is None else sh.shift),
                     _cell(None if sh is None else sh.register), _cell(g.shift)])
    return head, body


def factorial_table(rows: list[Factorial], recipes: Mapping[str, str], recipe: str) -> tuple[list[str], list[list[str]]]:
    head = ["model", "cell or contrast", "content shift", "register shift (references)", "register-only suite shift"]
    names = cell_order(recipes, recipe)
    a, b = names[0].split("/")[1], names[1].split("/")[1]
    label = {"harm": "harm (content) main effect", "register": f"register main effect ({a} − {b})",
             "interaction": f"interaction (harm in {a} − harm in {b})"}
    body = []
    for f in rows:
        for cell in names:
            if (m := f.cells.get(cell)) is not None:
                body.append([f.role, f"{cell}: {recipes[cell]}", _cell(m.content), _cell(m.register),
                             _cell(m.register_suite)])
        for c in CONTRASTS:
            if (m := f.contrasts.get(c)) is not None:
                body.append([f.role, label[c], _cell(m.content), _cell(m.register), _cell(m.register_suite)])
    return head, body


def study_sections(report: StudyReport) -> list[tuple[str, str, tuple[list[str], list[list[str]]]]]:
    """(title, note, table) for each section of a study report beyond the comparison: the register-only suite per
    condition, the 2 x 2, attacks beside their several controls (markdown, html and terminal render these)."""
    from persist.report.behaviour import BEHAVIOUR_NOTE, BEHAVIOUR_TITLE, behaviour_table, ungraded_note
    from persist.report.budget import BUDGET_NOTE, budget_table
    from persist.report.controls import CONTROLS_NOTE, controls_table

    out = []
    if report.register:
        out.append(("Content or register? Each condition on the register-only suite", REGISTER_NOTE,
                    register_table(report.rows, report.register)))
    if report.factorial and report.meta.factorial:
        out.append(("Harm × register: the 2 × 2", FACTORIAL_NOTE,
                    factorial_table(report.factorial, report.meta.factorial, report.meta.recipe)))
    if report.controlled:
        out.append(("Attacks beside their controls", CONTROLS_NOTE, controls_table(report.controlled)))
    if report.meta.budget:
        out.append(("Attack budget: best-so-far effect against compute", BUDGET_NOTE, budget_table(report.meta.budget)))
    if report.behaviour:
        out.append((BEHAVIOUR_TITLE[3:], BEHAVIOUR_NOTE + ungraded_note(report.behaviour),
                    behaviour_table(report.behaviour)))
    return out
