"""The persist command line: parse flags, build config objects, call persist. The only wiring point.

Heavy libraries (torch, transformers, peft, garak) are imported inside commands so `persist --help` is fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from persist.errors import PersistError

app = typer.Typer(help="Stress-test how well a language model's alignment persists.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Bundled name, folder, .gguf, hub id, openai:MODEL@URL; "
                                       "append +ADAPTER_DIR for a peft adapter.")]
DtypeOpt = Annotated[str, typer.Option(help="auto (fp32 on CPU, bf16 on GPU), float32, bfloat16, float16.")]
DeviceOpt = Annotated[str, typer.Option(help="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps.")]
FourBitOpt = Annotated[bool, typer.Option("--load-in-4bit", help="Load weights in 4-bit NF4 via bitsandbytes.")]
PickleOpt = Annotated[bool, typer.Option("--allow-pickle", help="Allow pickle (.bin) checkpoints; they can run code.")]
RemoteOpt = Annotated[bool, typer.Option("--trust-remote-code", help="Run model code shipped with the weights.")]


def console():  # noqa: ANN201 - rich is imported lazily
    from rich.console import Console

    return Console()


def load_options(device: str, dtype: str, load_in_4bit: bool, allow_pickle: bool, trust_remote_code: bool):  # noqa: ANN201
    from persist.models import LoadOptions

    return LoadOptions(device=device, dtype=dtype, load_in_4bit=load_in_4bit, allow_pickle=allow_pickle,
                       trust_remote_code=trust_remote_code)


@app.command()
def version() -> None:
    """Print the versions of persist and its main libraries."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as pkg_version

    import persist

    typer.echo(f"persist {persist.__version__}")
    for pkg in ("torch", "transformers", "peft", "accelerate", "datasets", "bitsandbytes", "garak"):
        try:
            typer.echo(f"{pkg} {pkg_version(pkg)}")
        except PackageNotFoundError:
            typer.echo(f"{pkg} (not installed)")


@app.command()
def models() -> None:
    """List the bundled models: installed, converted, size and parameters."""
    from rich.table import Table

    from persist.models import BUNDLED, model_info

    table = Table(title="bundled models")
    table.add_column("name", no_wrap=True)
    for col in ("installed", "converted", "MB", "params"):
        table.add_column(col, justify="right")
    table.add_column("what", overflow="fold")
    for name in BUNDLED:
        row = model_info(name)
        table.add_row(name, "yes" if row["installed"] else "no", "yes" if row["converted"] else "no",
                      str(row["size_mb"] or "-"), f"{row['params_m']}M" if row["params_m"] else "-",
                      row["description"] if row["installed"] else f"install: {row['install']}")
    console().print(table)


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="The user message.")],
    model: ModelOpt = "smollm2-135m-instruct",
    system: Annotated[str, typer.Option(help="Optional system message.")] = "",
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate.")] = 128,
    temperature: Annotated[float, typer.Option(help="0 = greedy.")] = 0.0,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    load_in_4bit: FourBitOpt = False,
    allow_pickle: PickleOpt = False,
    trust_remote_code: RemoteOpt = False,
) -> None:
    """Generate one reply: a smoke test of a model spec."""
    from persist.targets import GenerationConfig, open_target

    config = GenerationConfig(max_new_tokens=max_new_tokens, temperature=temperature)
    target = open_target(model, load_options(device, dtype, load_in_4bit, allow_pickle, trust_remote_code))
    chat = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    typer.echo(target.generate([chat], config)[0])


# ---------------------------------------------------------------- scoring and probes

probes_app = typer.Typer(help="Probe suites: list, validate, check a judge.", no_args_is_help=True)
app.add_typer(probes_app, name="probes")

SuiteOpt = Annotated[str, typer.Option(help="Suite name (see `persist probes list`) or a .jsonl file of items.")]
ScorerOpt = Annotated[str, typer.Option(help="likelihood (no judge), judge, or refusal.")]
LimitOpt = Annotated[Optional[int], typer.Option(help="Score a subset covering every trait x domain cell.")]
RunsOpt = Annotated[Path, typer.Option(help="Where run folders go.")]
NameOpt = Annotated[Optional[str], typer.Option(help="Run folder name (default from model and suite).")]
JudgeOpt = Annotated[Optional[str], typer.Option(help="Judge model spec for --scorer judge.")]


class RichProgress:
    """Rich progress bars for the jobs' stage(title, total) -> advance(n) protocol."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console_err(), transient=False)

    def __enter__(self) -> "RichProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, title: str, total: int):  # noqa: ANN204
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


@app.command()
def score(
    model: ModelOpt = "smollm2-135m-instruct",
    suite: SuiteOpt = "traits",
    scorer: ScorerOpt = "likelihood",
    limit: LimitOpt = None,
    judge: JudgeOpt = None,
    judge_mode: Annotated[str, typer.Option(help="em (aligned/coherent 0-100) or rubric.")] = "em",
    max_new_tokens: Annotated[int, typer.Option(help="Answer length for generation scorers.")] = 128,
    runs_dir: RunsOpt = Path("runs"),
    name: NameOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    load_in_4bit: FourBitOpt = False,
    allow_pickle: PickleOpt = False,
    trust_remote_code: RemoteOpt = False,
) -> None:
    """Score a model on a probe suite (clean) and print mean alignment per suite, trait and domain."""
    from persist.jobs import ScoreConfig, ScorerConfig, run_score
    from persist.registry import load_plugins

    load_plugins()
    cfg = ScoreConfig(model=model, suite=suite, limit=limit, runs_dir=runs_dir, name=name,
                      scorer=ScorerConfig(name=scorer, judge=judge, judge_mode=judge_mode,
                                          max_new_tokens=max_new_tokens),
                      load=load_options(device, dtype, load_in_4bit, allow_pickle, trust_remote_code))
    with RichProgress() as progress:
        result = run_score(cfg, progress)
    print_score_table(result["table"], f"{model} on {suite} ({scorer})")
    console().print(f"run folder: {result['folder']} ({result['n_scored']} newly scored)")


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
            console_err().print(e, highlight=False, markup=False)
        problems += len(errors)
        if not errors:
            console().print(f"{f}: {len(items)} items OK")
    if problems:
        raise typer.Exit(2)


# ---------------------------------------------------------------- prompt attacks

attacks_app = typer.Typer(help="Prompt attacks.", no_args_is_help=True)
app.add_typer(attacks_app, name="attacks")


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


def print_comparison(report: dict) -> None:
    from rich.table import Table

    from persist.report.markdown import fmt

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


@app.command()
def attack(
    model: ModelOpt = "smollm2-135m-instruct",
    baseline: Annotated[Optional[str], typer.Option(help="Baseline model spec to compare against.")] = None,
    attacks: Annotated[Optional[str], typer.Option(
        help="Comma-separated attack specs, e.g. 'persona-bad-medical,many-shot:k=16' (default: all).")] = None,
    suite: SuiteOpt = "traits",
    scorer: ScorerOpt = "likelihood",
    limit: LimitOpt = None,
    judge: JudgeOpt = None,
    max_new_tokens: Annotated[int, typer.Option(help="Answer length for generation scorers.")] = 128,
    runs_dir: RunsOpt = Path("runs"),
    name: NameOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    load_in_4bit: FourBitOpt = False,
    allow_pickle: PickleOpt = False,
    trust_remote_code: RemoteOpt = False,
) -> None:
    """Score each model clean and under each prompt attack, on the same items; print the degradation."""
    from persist.campaign import DEFAULT_ATTACKS, AttackConfig, run_attack
    from persist.jobs import ScorerConfig
    from persist.registry import load_plugins
    from persist.report.markdown import write_reports

    load_plugins()
    specs = tuple(s for s in attacks.split(",") if s.strip()) if attacks is not None else DEFAULT_ATTACKS
    cfg = AttackConfig(model=model, baseline=baseline, attacks=specs, suite=suite, limit=limit, runs_dir=runs_dir,
                       name=name, scorer=ScorerConfig(name=scorer, judge=judge, max_new_tokens=max_new_tokens),
                       load=load_options(device, dtype, load_in_4bit, allow_pickle, trust_remote_code))
    with RichProgress() as progress:
        result = run_attack(cfg, progress)
    write_reports(result["folder"], result["report"], f"Prompt-attack campaign: {model}")
    print_comparison(result["report"])
    console().print(f"reports: {result['folder']}/report.md, report.json")


def main() -> None:
    """Console entry point: PersistError -> one red line and its exit code; anything else is a bug."""
    try:
        app(standalone_mode=False)
    except PersistError as exc:
        if os.environ.get("PERSIST_DEBUG"):
            raise
        console_err().print(f"[red]error:[/red] {exc}", highlight=False, markup=True, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        console_err().print("[yellow]interrupted[/yellow]")
        sys.exit(130)
    except KeyboardInterrupt:
        console_err().print("[yellow]interrupted[/yellow]")
        sys.exit(130)
    except Exception as exc:
        import click

        if isinstance(exc, click.exceptions.UsageError):
            exc.show()
            sys.exit(2)
        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


def console_err():  # noqa: ANN201
    from rich.console import Console

    return Console(stderr=True)


if __name__ == "__main__":
    main()
