"""Terminal rendering with rich: progress bars and result tables (the only printing outside cli.py)."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from persist.report.markdown import fmt


def console(stderr: bool = False) -> Console:
    return Console(stderr=stderr)


class RichProgress:
    """Rich progress bars for the jobs' stage(title, total) -> advance(n) protocol."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console(stderr=True), transient=False)

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, title: str, total: int) -> Any:
        task = self.progress.add_task(title, total=total)
        return lambda n: self.progress.advance(task, n)


def print_score_table(table: dict, title: str) -> None:
    from rich.table import Table

    out = console()
    for level, rows in table.items():
        t = Table(title=f"{title} — by {level}", title_justify="left")
        t.add_column(level)
        t.add_column("score", justify="right")
        t.add_column("95% CI", justify="right")
        t.add_column("n", justify="right")
        for r in rows:
            t.add_row(str(r["name"]), f"{r['value']:.3f}", f"[{r['lo']:.3f}, {r['hi']:.3f}]", str(r["n"]))
        out.print(t)


def print_comparison(report: dict) -> None:
    from rich.table import Table

    out = console()
    t = Table(title="before vs after (95% paired CIs)", title_justify="left")
    for col in ("model", "condition", "n", "before", "after", "drop", "retention", "drop health", "drop other"):
        t.add_column(col, overflow="fold")
    for r in report["rows"]:
        ind, outd = r.get("in_domain"), r.get("out_of_domain")
        t.add_row(r["role"], r["condition"].removeprefix("attack:") + (" (ctrl)" if r["control"] else ""),
                  str(r["n"]), fmt(r["before"], 2), fmt(r["after"], 2), fmt(r["drop"], 2), fmt(r["retention"], 2),
                  fmt(ind and ind["drop"], 2), fmt(outd and outd["drop"], 2))
    out.print(t)
    for role, w in report.get("worst_case", {}).items():
        out.print(f"worst case, {role}: {fmt(w['worst'])} (before {fmt(w['before'])}); broken rate "
                  f"{fmt(w['broken_rate'])} of {w['n_eligible']} items")
    if report.get("differences"):
        t = Table(title="difference in drops (baseline - model; > 0 = model more persistent)", title_justify="left")
        for col in ("condition", "n", "difference", "p", "q"):
            t.add_column(col)
        for d in report["differences"]:
            t.add_row(d["condition"].removeprefix("attack:"), str(d["n"]), fmt(d["diff"]), f"{d['p']:.3f}",
                      f"{d['q']:.3f}")
        out.print(t)


