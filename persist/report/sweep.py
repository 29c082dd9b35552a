"""Reading a fine-tune sweep (`finetune-attack --search`, `study --worst-case`) back from its records: the points
of each model's sweep, named `finetune:RECIPE[lr=...,r=...]@STEPS`, and each model's own worst case within the
capability bound. Pure functions of records; the sweep itself runs in persist.jobs.sweep.
"""

from __future__ import annotations

from persist.api import Record
from persist.prepared import is_heldout
from persist.report.capability import capability_rows
from persist.report.compare import compare
from persist.report.model import CapabilityRow, Point, Row
from persist.report.run import ChosenPoint


def point_name(recipe: str, lr: float, rank: int) -> str:
    return f"{recipe}[lr={lr:g},r={rank}]"


def points_of(role: str, recipe: str, rows: list[Row], capability: list[CapabilityRow]) -> list[Point]:
    """Every sweep point of `role` found among a comparison's rows (conditions named by point_name)."""
    caps = {(c.role, c.condition): c for c in capability}
    out = []
    for r in rows:
        name = r.condition.name
        if r.role != role or r.condition.kind != "finetune" or not name.startswith(f"{recipe}[lr="):
            continue
        lr_text, rank_text = name[len(recipe) + 4:-1].split(",r=")
        out.append(Point(role=role, condition=r.condition, learning_rate=float(lr_text), rank=int(rank_text),
                         steps=r.condition.dose, row=r, capability=caps.get((role, r.condition))))
    return sorted(out, key=lambda p: (p.learning_rate, p.rank, p.steps))


def worst(points: list[Point]) -> Point | None:
    """The strongest attack that stays within the utility bound."""
    ok = [p for p in points if p.within_bound and p.strength == p.strength]
    return max(ok, key=lambda p: (p.strength, -p.steps)) if ok else None


def is_point(recipe: str, label: str) -> bool:
    """Whether a record's condition label is a point of `recipe`'s sweep."""
    return label.startswith(f"finetune:{recipe}[lr=")


def sweep_points(records: list[Record], cap_records: list[Record], recipe: str, roles: list[str],
                 epsilon: float) -> tuple[dict[str, list[Point]], dict[str, Point | None]]:
    """Each model's sweep points on every item (read from the records of the clean condition and the sweep), and
    its own worst case within the bound: *chosen* on the train half of the items and *reported* on the held-out
    half (persist.prepared.is_heldout), so the choice does not flatter the point it reports (winner's curse)."""
    def mine(rs: list[Record]) -> list[Record]:
        return [r for r in rs if r.condition == "clean" or is_point(recipe, r.condition)]

    ours, caps = mine(records), capability_rows(mine(cap_records), epsilon)
    every = compare(ours).rows
    train = compare([r for r in ours if not is_heldout(r.item_id)]).rows
    heldout = compare([r for r in ours if is_heldout(r.item_id)]).rows
    points = {role: points_of(role, recipe, every, caps) for role in roles}
    chosen: dict[str, Point | None] = {}
    for role in roles:
        pick = worst(points_of(role, recipe, train, caps))
        chosen[role] = None if pick is None else next(
            (p for p in points_of(role, recipe, heldout, caps) if p.condition == pick.condition), None)
    return points, chosen


def chosen_point(p: Point | None) -> ChosenPoint | None:
    """A worst case as the report stores it."""
    if p is None:
        return None
    return ChosenPoint(condition=p.condition.label, learning_rate=p.learning_rate, rank=p.rank, steps=p.steps,
                       strength=p.strength, capability_loss=None if p.capability is None else p.capability.loss)
