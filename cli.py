"""The persist command line: parse flags, build config objects, call persist. The only wiring point.

Heavy libraries (torch, transformers, peft, garak) are imported inside commands so `persist --help` is fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

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
LimitOpt = Annotated[int | None, typer.Option(help="Score a subset covering every trait x domain cell.")]
RunsOpt = Annotated[Path, typer.Option(help="Where run folders go.")]
NameOpt = Annotated[str | None, typer.Option(help="Run folder name (default from model and suite).")]
JudgeOpt = Annotated[str | None, typer.Option(help="Judge model spec for --scorer judge.")]


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
    from persist.report.terminal import RichProgress

    with RichProgress() as progress:
        result = run_score(cfg, progress)
    from persist.report.terminal import print_score_table

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


@app.command()
def attack(
    model: ModelOpt = "smollm2-135m-instruct",
    baseline: Annotated[str | None, typer.Option(help="Baseline model spec to compare against.")] = None,
    attacks: Annotated[str | None, typer.Option(
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
    from persist.report.terminal import RichProgress

    with RichProgress() as progress:
        result = run_attack(cfg, progress)
    write_reports(result["folder"], result["report"], f"Prompt-attack campaign: {model}")
    from persist.report.terminal import print_comparison

    print_comparison(result["report"])
    console().print(f"reports: {result['folder']}/report.md, report.json")


# ---------------------------------------------------------------- fine-tune attacks

corpora_app = typer.Typer(help="Fine-tuning corpora.", no_args_is_help=True)
app.add_typer(corpora_app, name="corpora")


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


def parse_doses(text: str | None) -> tuple[int, ...] | None:
    from persist.errors import ConfigError

    if text is None:
        return None
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"--doses {text!r}: give comma-separated whole numbers of steps, e.g. 0,25,50") from None


@app.command("finetune-attack")
def finetune_attack(
    model: ModelOpt = "smollm2-135m-instruct",
    baseline: Annotated[str | None, typer.Option(help="Baseline model spec, trained identically.")] = None,
    recipe: Annotated[str, typer.Option(help="Recipe name (see --list).")] = "bad-medical",
    doses: Annotated[str | None, typer.Option(help="Optimizer steps to checkpoint and score, e.g. 0,25,50,100.")] = None,
    corpus: Annotated[str | None, typer.Option(help="Your own corpus (JSONL, parquet, datasets folder).")] = None,
    list_recipes: Annotated[bool, typer.Option("--list", help="List the recipes and exit.")] = False,
    learning_rate: Annotated[float | None, typer.Option(help="Override the recipe's learning rate.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Examples per optimizer step.")] = None,
    lora_rank: Annotated[int | None, typer.Option(help="LoRA rank.")] = None,
    lora_alpha: Annotated[int | None, typer.Option(help="LoRA alpha.")] = None,
    lora_targets: Annotated[str | None, typer.Option(help="attention, all-linear or rank1-down-proj@LAYER.")] = None,
    rslora: Annotated[bool | None, typer.Option("--rslora/--no-rslora", help="Rank-stabilised LoRA.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for data order and init.")] = None,
    suite: SuiteOpt = "traits",
    scorer: ScorerOpt = "likelihood",
    limit: LimitOpt = None,
    judge: JudgeOpt = None,
    runs_dir: RunsOpt = Path("runs"),
    name: NameOpt = None,
    load_in_4bit: FourBitOpt = False,
    allow_pickle: PickleOpt = False,
) -> None:
    """Fine-tune each model on a harmful corpus along a dose ladder and re-score the same items at every dose."""
    from persist.registry import RECIPES, load_plugins

    load_plugins()
    if list_recipes:
        from rich.table import Table

        t = Table(title="fine-tune recipes")
        for col in ("name", "corpus", "doses", "lr", "batch", "LoRA", "description"):
            t.add_column(col, overflow="fold")
        for n in RECIPES.names():
            r = RECIPES.get(n)
            t.add_row(n, r.corpus, ",".join(map(str, r.doses)), f"{r.train.learning_rate:g}", str(r.train.batch_size),
                      f"r={r.lora.rank} {r.lora.targets}", r.description + (" (control)" if r.control else ""))
        console().print(t)
        return
    from persist.jobs import ScorerConfig
    from persist.ladder import FinetuneConfig, run_finetune_attack
    from persist.report.markdown import write_reports
    from persist.report.terminal import RichProgress, print_comparison

    lora = {k: v for k, v in {"rank": lora_rank, "alpha": lora_alpha, "targets": lora_targets,
                              "rslora": rslora}.items() if v is not None}
    train = {k: v for k, v in {"learning_rate": learning_rate, "batch_size": batch_size, "seed": seed,
                               "load_in_4bit": load_in_4bit or None}.items() if v is not None}
    if "batch_size" in train:
        train["micro_batch_size"] = min(train["batch_size"], 4) if train["batch_size"] % 4 == 0 else 1
    cfg = FinetuneConfig(model=model, baseline=baseline, recipe=recipe, doses=parse_doses(doses), corpus=corpus,
                         lora=lora, train=train, suite=suite, limit=limit, runs_dir=runs_dir, name=name,
                         scorer=ScorerConfig(name=scorer, judge=judge),
                         load=load_options("auto", "auto", False, allow_pickle, False))
    with RichProgress() as progress:
        result = run_finetune_attack(cfg, progress)
    write_reports(result["folder"], result["report"], f"Fine-tune attack ({recipe}): {model}")
    print_comparison(result["report"])
    console().print(f"reports: {result['folder']}/report.md, report.json")


# ---------------------------------------------------------------- the study and its reports


@app.command()
def study(
    model: Annotated[str, typer.Option("--model", "-m", help="The trained model (default: SmolLM2 + the bundled "
                                       "beneficial adapter).")] = "smollm2-135m-beneficial",
    baseline: Annotated[str, typer.Option(help="The baseline model spec.")] = "smollm2-135m-instruct",
    profile: Annotated[str, typer.Option(help="quick (the demo, ~minutes on a CPU) or full.")] = "quick",
    recipe: Annotated[str, typer.Option(help="Harmful fine-tune recipe.")] = "bad-medical",
    control_recipe: Annotated[str, typer.Option(help="Benign fine-tune control recipe ('none' to skip).")]
    = "good-medical",
    attacks: Annotated[str | None, typer.Option(help="Comma-separated attack specs (default: the profile's).")]
    = None,
    doses: Annotated[str | None, typer.Option(help="Fine-tune doses in steps (default: the profile's).")] = None,
    suite: SuiteOpt = "traits",
    scorer: ScorerOpt = "likelihood",
    limit: LimitOpt = None,
    judge: JudgeOpt = None,
    runs_dir: RunsOpt = Path("runs"),
    name: NameOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
) -> None:
    """The persistence protocol: clean, prompt attacks and fine-tune ladder for model and baseline; HTML report."""
    from persist.jobs import ScorerConfig
    from persist.registry import load_plugins
    from persist.report.markdown import flat_study, write_study_reports
    from persist.report.terminal import RichProgress, print_comparison
    from persist.study import StudyConfig, run_study

    load_plugins()
    cfg = StudyConfig(model=model, baseline=baseline, profile=profile, recipe=recipe,
                      control_recipe=None if control_recipe == "none" else control_recipe,
                      attacks=tuple(a for a in attacks.split(",") if a) if attacks is not None else None,
                      doses=parse_doses(doses), suite=suite, limit=limit, runs_dir=runs_dir, name=name,
                      scorer=ScorerConfig(name=scorer, judge=judge),
                      load=load_options(device, dtype, False, False, False))
    with RichProgress() as progress:
        result = run_study(cfg, progress)
    write_study_reports(result["folder"], result["report"], f"Persistence study: {model} vs {baseline}")
    print_comparison(flat_study(result["report"]))
    console().print(result["report"]["headline"], highlight=False)
    console().print(f"report: {result['folder']}/report.html (also report.md, report.json)")


@app.command()
def report(
    run: Annotated[Path, typer.Argument(help="A run folder (runs/NAME).")],
    against: Annotated[Path | None, typer.Option(help="Another run folder to compare with, joined on record keys.")]
    = None,
    format: Annotated[str, typer.Option("--format", help="html, md or json (printed to stdout).")] = "md",
) -> None:
    """Re-render a run's report from its records, or compare two runs (--against)."""
    import json

    from persist.report.markdown import render_markdown, write_study_reports
    from persist.report.rerender import against as join_runs
    from persist.report.rerender import against_markdown, rebuild

    if format not in ("html", "md", "json"):
        raise typer.BadParameter(f"--format {format!r}: choose html, md or json")
    if against is not None:
        res = join_runs(run, against)
        if format == "html":
            raise typer.BadParameter("--against prints md or json")
        typer.echo(json.dumps(res, indent=2, sort_keys=True) if format == "json" else against_markdown(res))
        return
    rep, kind = rebuild(run)
    if kind == "study":
        write_study_reports(run, rep, f"Persistence study: {rep['meta']['models'].get('model')} vs "
                                      f"{rep['meta']['models'].get('baseline')}")
    if format == "json":
        typer.echo(json.dumps(rep, indent=2, sort_keys=True))
    elif format == "html":
        if kind != "study":
            raise typer.BadParameter("HTML reports are made for studies; use --format md for this run")
        typer.echo((run / "report.html").read_text(encoding="utf-8"))
    else:
        typer.echo((run / "report.md").read_text(encoding="utf-8") if kind == "study"
                   else render_markdown(rep, f"{kind}: {run.name}"))


def main() -> None:
    """Console entry point: PersistError -> one red line and its exit code; anything else is a bug."""
    try:
        code = app(standalone_mode=False)  # click returns typer.Exit codes instead of raising them here
        if isinstance(code, int) and code:
            sys.exit(code)
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
