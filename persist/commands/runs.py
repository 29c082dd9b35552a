"""Commands that read finished runs: `persist report` (re-render, or compare two runs) and `persist plan`.

They load no model and no plugin; cli.py registers them on the app.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from persist.commands.options import FormatOpt, check_format

if TYPE_CHECKING:
    from persist.timings import Cost


def report(
    run: Annotated[Path, typer.Argument(help="A run folder (runs/NAME).")],
    against: Annotated[Path | None, typer.Option(help="Another run folder to compare with, joined on record keys.")]
    = None,
    format: Annotated[str, typer.Option("--format", help="html, md or json (printed to stdout).")] = "md",
) -> None:
    """Re-render a run's report from its records, or compare two runs (--against)."""
    from persist.report.markdown import against_markdown, run_markdown
    from persist.report.model import StudyReport
    from persist.report.rerender import against as join_runs
    from persist.report.rerender import rebuild
    from persist.report.write import report_json, study_title, write_study_reports

    if format not in ("html", "md", "json"):
        raise typer.BadParameter(f"--format {format!r}: choose html, md or json")
    if against is not None:
        if format == "html":
            raise typer.BadParameter("--against prints md or json")
        res = join_runs(run, against)
        import json

        typer.echo(json.dumps(res.to_dict(), indent=2, sort_keys=True) if format == "json" else against_markdown(res),
                   nl=format == "json")
        return
    rep = rebuild(run)
    if isinstance(rep, StudyReport):
        write_study_reports(run, rep, study_title(rep))
    if format == "json":
        typer.echo(report_json(rep), nl=False)
    elif format == "html":
        if not isinstance(rep, StudyReport):
            raise typer.BadParameter("HTML reports are made for studies; use --format md for this run")
        typer.echo((run / "report.html").read_text(encoding="utf-8"), nl=False)
    else:
        typer.echo((run / "report.md").read_text(encoding="utf-8") if isinstance(rep, StudyReport)
                   else run_markdown(rep, f"{rep.kind}: {run.name}"), nl=False)


def plan(
    run: Annotated[Path, typer.Argument(help="A pilot run folder (runs/NAME).")],
    effect: Annotated[float, typer.Option(help="The log-odds shift to detect, in nats.")] = 0.5,
    effect_points: Annotated[float, typer.Option(help="The difference to detect on the 0-1 score, in points.")]
    = 0.13,
    format: FormatOpt = "table",
) -> None:
    """Items and training seeds needed to detect EFFECT with 80% power, per model, condition and difference."""
    import json
    from dataclasses import asdict

    from persist.jobs.plan import MIN_SEEDS, pilot_cost, recommended, run_records
    from persist.jobs.plan import plan as make_plan
    from persist.report.terminal import print_table
    from persist.timings import duration

    if effect <= 0 or effect_points <= 0:
        raise typer.BadParameter(f"--effect {effect:g} / --effect-points {effect_points:g}: give positive "
                                 "differences, e.g. 0.5 nats and 0.1 points")
    records = run_records(run)
    rows = make_plan(records, effect_points, effect)
    cost = pilot_cost(run, records)

    def wall(items: int | None, seeds: int | None) -> float | None:
        return None if cost is None or items is None or seeds is None else round(cost.predict(items, seeds), 1)

    if check_format(format):
        typer.echo(json.dumps([asdict(r) | {"predicted_seconds_items_needed": wall(r.items_needed, r.seeds),
                                            "predicted_seconds_seeds_needed": wall(r.n, r.seeds_needed)}
                               for r in rows], indent=2))
        return

    def need(v: int | None, what: str, seconds: float | None) -> str:
        if v is None:
            return "not reachable"
        return f"{v} {what}" + ("" if seconds is None else f", ~{duration(seconds)}")

    print_table(f"to detect {effect:g} nats of log-odds shift or {effect_points:g} on the 0-1 score with 80% power "
                f"(two-sided, alpha 0.05), from {run}",
                (["what", "statistic", "effect", "n", "seeds", "sd items", "sd seeds", "detectable now",
                  "items needed", "seeds needed"],
                 [[r.what, r.statistic, f"{r.effect:.3g}", str(r.n), str(r.seeds), f"{r.sd_items:.3g}",
                   "none (nothing trained)" if r.unseeded else "unknown (pilot with --seeds >= 2)"
                   if r.sd_seeds is None else f"{r.sd_seeds:.3g}",
                   f"{r.mde:.3g}", need(r.items_needed, f"items at {r.seeds} seed(s)",
                                        wall(r.items_needed, r.seeds)) + (
                       f" (few seeds: the interval undercovers if seeds vary; {MIN_SEEDS} or more)"
                       if 2 <= r.seeds < MIN_SEEDS and not r.unseeded and r.items_needed is not None else ""),
                   "–" if r.seeds < 2 else need(r.seeds_needed, f"seeds at {r.n} items", wall(r.n, r.seeds_needed))]
                  for r in rows]))
    typer.echo(wall_time_lines(cost, recommended(rows), run))


def wall_time_lines(cost: Cost | None, design: tuple[int, int] | None, run: Path) -> str:
    """What the wall times in the plan rest on, and the predicted wall time of the recommended design."""
    from persist.timings import TIMINGS, duration

    if cost is None:
        return (f"No predicted wall time: {run / TIMINGS} is missing (the pilot was run before persist timed its "
                "parts); rerun the pilot into a new --name to get one.")
    lines = [f"Wall times (~) are predicted for this machine from the pilot's {run / TIMINGS}: it took "
             f"{duration(cost.measured)} at {cost.items} items x {cost.seeds} seed(s) (fixed {duration(cost.fixed)}, "
             f"scoring the items {duration(cost.per_items)}, per seed {duration(cost.per_seeds)}, scoring the items "
             f"per seed {duration(cost.per_items_seeds)})."]
    if not cost.complete:
        lines.append("The pilot was interrupted: a session that never finished timed some parts but not its "
                     "overhead, so the prediction is a little low.")
    if design is not None:
        items, seeds = design
        lines.append(f"Recommended design (every difference on the log-odds at the effect): {items} items x {seeds} "
                     f"seed(s), ~{duration(cost.predict(items, seeds))}.")
    return "\n".join(lines)
