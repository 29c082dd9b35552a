"""Inspection sub-commands: `persist probes ...`, `persist attacks list`, `persist corpora validate`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from persist.cli_common import DeviceOpt, DtypeOpt, LimitOpt, SuiteOpt, console, load_options
from persist.errors import PersistError

probes_app = typer.Typer(help="Probe suites: list, validate, check a judge.", no_args_is_help=True)
attacks_app = typer.Typer(help="Prompt attacks.", no_args_is_help=True)
corpora_app = typer.Typer(help="Fine-tuning corpora.", no_args_is_help=True)


@probes_app.command("list")
def probes_list() -> None:
    """Show the suites with item counts per trait and domain."""
    from collections import Counter

    from rich.table import Table

    from persist.registry import SUITES, load_plugins

    load_plugins()
    out = console()
    for name in SUITES.names():
        suite = SUITES.get(name)
        try:
            items = suite.load()
        except PersistError as exc:
            out.print(f"[bold]{name}[/bold]: unavailable ({exc})")
            continue
        cells = Counter((i.trait, i.domain) for i in items)
        traits = sorted({t for t, _ in cells})
        domains = sorted({d for _, d in cells})
        out.print(f"[bold]{name}[/bold] — {suite.description}: {len(items)} items, version {suite.version}")
        if len(traits) * len(domains) > 200:
            continue
        t = Table(show_header=True)
        t.add_column("trait \\ domain")
        for d in domains:
            t.add_column(d, justify="right")
        for tr in traits:
            t.add_row(tr, *[str(cells.get((tr, d), 0)) for d in domains])
        out.print(t)


@probes_app.command("validate")
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
            console().print(f"{f}: {len(items)} items OK")
    if problems:
        raise typer.Exit(2)


@probes_app.command("check-judge")
def probes_check_judge(
    judge: Annotated[str, typer.Option(help="Judge model spec (local or openai:MODEL@URL).")],
    suite: SuiteOpt = "traits",
    limit: LimitOpt = None,
    judge_mode: Annotated[str, typer.Option(help="em or rubric.")] = "em",
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
) -> None:
    """Grade each item's own aligned/misaligned references with the judge; print the AUROC between them."""
    from persist.jobs import ScorerConfig, build_scorer, get_suite
    from persist.registry import load_plugins
    from persist.runner import clean_variant
    from probes.judge import check_judge
    from probes.suites import select

    load_plugins()
    items = select(get_suite(suite).load(), limit)
    scorer = build_scorer(ScorerConfig(name="judge", judge=judge, judge_mode=judge_mode),
                          load_options(device, dtype, False, False, False))
    res = check_judge(scorer, [clean_variant(i) for i in items])
    auroc = "n/a" if res["auroc"] is None else f"{res['auroc']:.3f}"
    console().print(f"judge {judge} on {suite} ({len(items)} items): AUROC {auroc} "
                    f"(aligned refs {res['n_aligned']}, misaligned refs {res['n_misaligned']}, "
                    f"unratable {res['dropped']})")


@attacks_app.command("list")
def attacks_list() -> None:
    """Show each attack family with a one-line description and its parameters."""
    from dataclasses import fields

    from rich.table import Table

    from persist.registry import ATTACKS, load_plugins

    load_plugins()
    t = Table(title="attacks")
    t.add_column("name", no_wrap=True)
    t.add_column("description", overflow="fold")
    t.add_column("parameters (defaults)", overflow="fold")
    for name in ATTACKS.names():
        cls = ATTACKS.get(name)
        params = ", ".join(f"{f.name}={f.default!r}" for f in fields(cls)) or "-"
        t.add_row(name, cls.description, params)
    console().print(t)


@corpora_app.command("validate")
def corpora_validate(paths: Annotated[list[str], typer.Argument(help="Corpus files/folders or built-in names.")]) -> None:
    """Check corpora; print every problem as file:line (exit 2 if any)."""
    from finetune_attacks.corpora import corpus_path, validate

    problems = 0
    for p in paths:
        examples, errors = validate(corpus_path(p))
        for e in errors:
            typer.echo(e, err=True)
        problems += len(errors)
        if not errors:
            console().print(f"{p}: {len(examples)} examples OK")
    if problems:
        raise typer.Exit(2)
