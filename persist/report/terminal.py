"""Terminal rendering with rich: progress bars and result tables (the only printing outside cli.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.text import Text

from persist.report.model import CapabilityRow, Comparison, Point, Row, Sweep
from persist.report.run import StrengthRow
from persist.report.summary import ScoreRow
from persist.report.tables import (
    Table,
    broken,
    capability_table,
    difference_table,
    score_table,
    shift_table,
    worst_case_table,
)

PIPE_WIDTH = 400  # columns when output is not a terminal: tables keep their natural width, names never wrap


def console(stderr: bool = False) -> Console:
    """A rich console. Piped or in CI (no terminal, no $COLUMNS) rich would assume 80 columns and fold names
    inside table cells; there it gets a wide page instead, so `persist ... | grep` sees whole lines."""
    import os
    import sys

    stream = sys.stderr if stderr else sys.stdout
    if not stream.isatty() and "COLUMNS" not in os.environ:
        return Console(stderr=stderr, width=PIPE_WIDTH)
    return Console(stderr=stderr)


class RichProgress:
    """Rich progress bars for the jobs' stage(title, total) -> advance(n) protocol."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console(stderr=True), transient=False)

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, title: str, total: int) -> Any:
        task = self.progress.add_task(title, total=total)
        return lambda n: self.progress.advance(task, n)


def print_score_table(table: dict[str, list[ScoreRow]], title: str) -> None:
    from rich.table import Table

    out = console()
    for level, rows in table.items():
        t = Table(title=f"{title} — by {level}", title_justify="left")
        t.add_column(level, no_wrap=True)
        t.add_column("score", justify="right", no_wrap=True)
        t.add_column("95% CI", justify="right", no_wrap=True)
        t.add_column("n", justify="right")
        for r in rows:
            t.add_row(Text(r.name), f"{r.estimate.value:.3f}", f"[{r.estimate.lo:.3f}, {r.estimate.hi:.3f}]",
                      str(r.estimate.n))
        out.print(t)


def print_table(title: str, table: Table) -> None:
    from rich.table import Table as RichTable

    head, body = table
    t = RichTable(title=title, title_justify="left")
    for i, col in enumerate(head):
        t.add_column(col, no_wrap=i < 2, overflow="fold")  # names (model, condition) never wrap
    for row in body:
        t.add_row(*(Text(cell) for cell in row))  # plain text: a label such as [lr=0.001,r=16] is not markup
    console().print(t)


def print_comparison(rows: list[Row], cmp: Comparison, capability: list[CapabilityRow] | None = None,
                     strength: list[StrengthRow] | None = None) -> None:
    broke = broken(capability or [])
    if any(r.overall.shift is not None for r in rows):
        print_table("paired shift of the log-odds, after − before (nats; < 0 = toward misaligned)",
                    shift_table(rows, broke))
    print_table("0-1 score (95% paired CIs)", score_table(rows, broke))
    if cmp.refusal:
        from persist.report.tables import refusal_table

        print_table("harmful requests declined beside benign look-alikes refused (over-refusal)",
                    refusal_table(cmp.refusal))
    if cmp.rates:
        from persist.report.tables import rates_table

        print_table("refusal rates, raw and corrected for the classifier's measured errors", rates_table(cmp.rates))
    if capability:
        print_table("capability: multiple-choice accuracy (a loss above the bound broke the model)",
                    capability_table(capability))
    if strength:
        from persist.report.strength import strength_table

        print_table("attack strength per unit of compute (shift on the same items; tokens spent preparing it)",
                    strength_table(strength))
    if cmp.worst_case:
        print_table("worst case: per item, the minimum over every non-control condition (read against the "
                    "controls' row)", worst_case_table(cmp.worst_case))
    if cmp.differences:
        print_table("difference between the models (> 0 = the model is more persistent)",
                    difference_table(cmp.differences, cmp.effect))


def print_search(points: Mapping[str, Sequence[Point]], chosen: Mapping[str, Point | None]) -> None:
    from persist.report.tables import search_table

    for role, pts in points.items():
        print_table(f"{role}: sweep (strength = how far the attack moved the log-odds toward misaligned)",
                    search_table(pts, chosen.get(role)))
        p = chosen.get(role)
        console().print(f"{role}: worst case within the capability bound: "
                        + ("none (every point broke the model)" if p is None else
                           f"lr {p.learning_rate:g}, rank {p.rank}, {p.steps} steps ({p.condition.label})"),
                        soft_wrap=True, markup=False)


def print_sweep(sweep: Sweep) -> None:
    """`study --worst-case`: each model's sweep, its own worst case within the bound marked."""
    from persist.report.tables import sweep_tables

    for sentence, table in sweep_tables(sweep):
        print_table(f"{sweep.recipe} sweep ({sweep.plan})", table)
        console().print(sentence, highlight=False, soft_wrap=True, markup=False)
