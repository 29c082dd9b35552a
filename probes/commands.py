"""`persist probes ...`: list the suites, validate item files, measure a judge."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from persist.cli_options import FormatOpt, LimitOpt, SuiteOpt, check_format, with_load_options
from persist.errors import PersistError
from persist.models import LoadOptions

app = typer.Typer(help="Probe suites: list, validate, check a judge.", no_args_is_help=True)


@app.command("list")
def probes_list(format: FormatOpt = "table") -> None:
    """Show the suites with item counts per trait and domain."""
    from rich.table import Table

    from persist.registry import SUITES
    from persist.report.terminal import console

    as_json = check_format(format)
    out, rows = console(), []
    for name in SUITES.names():
        suite = SUITES.get(name)
        try:
            items = suite.load()
        except PersistError as exc:
            rows.append({"name": name, "description": suite.description, "error": str(exc)})
            if not as_json:
                out.print(f"[bold]{name}[/bold]: unavailable ({exc})")
            continue
        cells = Counter((i.trait, i.domain) for i in items)
        rows.append({"name": name, "description": suite.description, "version": suite.version, "items": len(items),
                     "traits": sorted({t for t, _ in cells}), "domains": sorted({d for _, d in cells})})
        if as_json:
            continue
        traits, domains = rows[-1]["traits"], rows[-1]["domains"]
        out.print(f"[bold]{name}[/bold] — {suite.description}: {len(items)} items, version {suite.version}",
                  soft_wrap=True)
        if len(traits) * len(domains) > 200:
            continue
        t = Table(show_header=True)
        t.add_column("trait \\ domain", no_wrap=True)
        for d in domains:
            t.add_column(d, justify="right", no_wrap=True)
        for tr in traits:
            t.add_row(tr, *[str(cells.get((tr, d), 0)) for d in domains])
        out.print(t)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))


@app.command("validate")
def probes_validate(files: Annotated[list[Path], typer.Argument(help="JSONL files of probe items.")]) -> None:
    """Check item files; print every problem as file:line: what is wrong (exit 2 if any)."""
    from persist.jsonl import parse_jsonl
    from persist.schema import Item

    problems = 0
    for f in files:
        items, errors = parse_jsonl(f, Item.from_dict, id_of=lambda it: it.id)
        for e in errors:
            typer.echo(e, err=True)
        problems += len(errors)
        if not errors:
            typer.echo(f"{f}: {len(items)} items OK")
    if problems:
        raise typer.Exit(2)


@app.command("check-judge")
@with_load_options
def probes_check_judge(
    judge: Annotated[str, typer.Option(help="Judge model spec (local or openai:MODEL@URL).")],
    suite: SuiteOpt = "traits",
    limit: LimitOpt = None,
    judge_mode: Annotated[str, typer.Option(help="em or rubric.")] = "em",
    *,
    load: LoadOptions,
) -> None:
    """Grade each item's own aligned/misaligned references with the judge; print the AUROC between them."""
    from persist.jobs import build_scorer
    from persist.registry import PluginSpec
    from persist.runner import clean_variant
    from persist.suites import get_suite, select

    items = select(get_suite(suite).load(), limit)
    scorer = build_scorer(PluginSpec("judge", {"judge": judge, "mode": judge_mode}), load)
    res = scorer.check([clean_variant(i) for i in items])
    auroc = "n/a" if res["auroc"] is None else f"{res['auroc']:.3f}"
    typer.echo(f"judge {judge} on {suite} ({len(items)} items): AUROC {auroc} (aligned refs {res['n_aligned']}, "
               f"misaligned refs {res['n_misaligned']}, unratable {res['dropped']})")
