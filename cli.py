"""The persist command line: parse flags, build config objects, call persist. The only wiring point.

Installed, this module is `persist.cli` (see setup.py). Heavy libraries (torch, transformers, peft, garak) are
imported inside commands so `persist --help` is fast. Every command that loads a model takes the same loading
flags (persist.cli_options.with_load_options).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from persist.attacks.commands import app as attacks_app
from persist.cli_options import (
    CapabilityOpt,
    EffectOpt,
    FormatOpt,
    JudgeModeOpt,
    JudgeOpt,
    LimitOpt,
    MatchedOpt,
    MaxNewOpt,
    ModelOpt,
    NameOpt,
    RefusalClassifierOpt,
    RunsOpt,
    ScorerOpt,
    SeedsOpt,
    SuiteOpt,
    check_format,
    parse_doses,
    scorer_spec,
    with_load_options,
)
from persist.cli_runs import plan, report
from persist.errors import PersistError
from persist.finetune_attacks.commands import app as corpora_app
from persist.models import LoadOptions
from persist.probes.commands import app as probes_app

app = typer.Typer(help="Stress-test how well a language model's alignment persists.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
app.command()(report)
app.command()(plan)
app.add_typer(probes_app, name="probes")
app.add_typer(attacks_app, name="attacks")
app.add_typer(corpora_app, name="corpora")


@app.callback()
def _load_plugins() -> None:
    from persist import plugins

    plugins.load()


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
def models(format: FormatOpt = "table") -> None:
    """List the bundled models: installed, converted, size and parameters."""
    import json

    from persist.models import BUNDLED, model_info

    rows = [{"name": name, **model_info(name)} for name in BUNDLED]
    if check_format(format):
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    from rich.table import Table

    from persist.report.terminal import console

    table = Table(title="bundled models")
    table.add_column("name", no_wrap=True)
    for col in ("installed", "converted", "MB", "params"):
        table.add_column(col, justify="right")
    table.add_column("what", overflow="fold")
    for row in rows:
        table.add_row(row["name"], "yes" if row["installed"] else "no", "yes" if row["converted"] else "no",
                      str(row["size_mb"] or "-"), f"{row['params_m']}M" if row["params_m"] else "-",
                      row["description"] if row["installed"] else f"install: {row['install']}")
    console().print(table)


@app.command()
@with_load_options
def generate(
    prompt: Annotated[str, typer.Argument(help="The user message.")],
    model: ModelOpt = "smollm2-135m-instruct",
    system: Annotated[str, typer.Option(help="Optional system message.")] = "",
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate.")] = 128,
    temperature: Annotated[float, typer.Option(help="0 = greedy.")] = 0.0,
    *,
    load: LoadOptions,
) -> None:
    """Generate one reply: a smoke test of a model spec."""
    from persist.models import ModelSpec
    from persist.targets import GenerationConfig, open_target

    config = GenerationConfig(max_new_tokens=max_new_tokens, temperature=temperature)
    spec = ModelSpec.parse(model)
    spec.check_load(load)
    if not spec.is_endpoint:
        load.check_device()
    target = open_target(spec, load)
    chat = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    typer.echo(target.generate([chat], config)[0])


@app.command()
@with_load_options
def score(
    model: ModelOpt = "smollm2-135m-instruct",
    suite: SuiteOpt = "traits",
    scorer: ScorerOpt = "likelihood",
    limit: LimitOpt = None,
    judge: JudgeOpt = None,
    judge_mode: JudgeModeOpt = None,
    max_new_tokens: MaxNewOpt = None,
    refusal_classifier: RefusalClassifierOpt = None,
    runs_dir: RunsOpt = Path("runs"),
    name: NameOpt = None,
    *,
    load: LoadOptions,
) -> None:
    """Score a model on a probe suite (clean) and print mean alignment per suite, trait and domain."""
    from persist.jobs.score import ScoreConfig, run_score
    from persist.report.summary import score_table
    from persist.report.terminal import RichProgress, console, print_score_table

    cfg = ScoreConfig(model=model, suite=suite, limit=limit, runs_dir=runs_dir, name=name, load=load,
                      scorer=scorer_spec(scorer, judge=judge, judge_mode=judge_mode, max_new_tokens=max_new_tokens,
                                         refusal_classifier=refusal_classifier))
    with RichProgress() as progress:
        result = run_score(cfg, progress)
    print_score_table(score_table(result["records"]), f"{model} on {suite} ({cfg.scorer.name})")
    console().print(f"run folder: {result['folder']} ({result['n_scored']} newly scored)", soft_wrap=True)


@app.command()
@with_load_options
def attack(
    model: ModelOpt = "smollm2-135m-instruct",
    baseline: Annotated[str | None, typer.Option(help="Baseline model spec to compare against.")] = None,
    attacks: Annotated[str | None, typer.Option(
        help="Comma-separated attack specs, e.g. 'persona-bad-medical,many-shot:k=16' (default: all).")] = None,
    matched_controls: MatchedOpt = False,
    effect: EffectOpt = 0.13,
    capability: CapabilityOpt = 48,
    suite: SuiteOpt = "traits",
    scorer: ScorerOpt = "likelihood",
    limit: LimitOpt = None,
    judge: JudgeOpt = None,
    judge_mode: JudgeModeOpt = None,
    max_new_tokens: MaxNewOpt = None,
    refusal_classifier: RefusalClassifierOpt = None,
    runs_dir: RunsOpt = Path("runs"),
    name: NameOpt = None,
    *,
    load: LoadOptions,
) -> None:
    """Score each model clean and under each prompt attack, on the same items; print the degradation."""
    from persist.jobs.attack import DEFAULT_ATTACKS, AttackConfig, run_attack
    from persist.report.terminal import RichProgress, console, print_comparison
    from persist.report.write import write_reports

    specs = tuple(s for s in attacks.split(",") if s.strip()) if attacks is not None else DEFAULT_ATTACKS
    cfg = AttackConfig(model=model, baseline=baseline, attacks=specs, matched_controls=matched_controls, suite=suite,
                       limit=limit, runs_dir=runs_dir, effect=effect, capability=capability,
                       name=name, load=load, scorer=scorer_spec(scorer, judge=judge, judge_mode=judge_mode,
                                                                max_new_tokens=max_new_tokens,
                                                                refusal_classifier=refusal_classifier))
    with RichProgress() as progress:
        result = run_attack(cfg, progress)
    report = result["report"]
    write_reports(result["folder"], report, f"Prompt-attack campaign: {model}")
    print_comparison(report.comparison.rows, report.comparison, report.capability, report.extra.get("strength"))
    console().print(f"reports: {result['folder']}/report.md, report.json", soft_wrap=True)


@app.command("finetune-attack")
@with_load_options
def finetune_attack(
    model: ModelOpt = "smollm2-135m-instruct",
    baseline: Annotated[str | None, typer.Option(help="Baseline model spec, trained identically.")] = None,
    recipe: Annotated[str, typer.Option(help="Recipe name (see --list).")] = "bad-medical",
    doses: Annotated[str | None, typer.Option(help="Optimizer steps to checkpoint and score, e.g. 0,25,50,100.")] = None,
    corpus: Annotated[str | None, typer.Option(help="Your own corpus (JSONL, parquet, datasets folder).")] = None,
    list_recipes: Annotated[bool, typer.Option("--list", help="List the recipes and exit.")] = False,
    format: FormatOpt = "table",
    learning_rate: Annotated[float | None, typer.Option(help="Override the recipe's learning rate.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Examples per optimizer step.")] = None,
    lora_rank: Annotated[int | None, typer.Option(help="LoRA rank.")] = None,
    lora_alpha: Annotated[int | None, typer.Option(help="LoRA alpha.")] = None,
    lora_targets: Annotated[str | None, typer.Option(help="attention, all-linear or rank1-down-proj@LAYER.")] = None,
    rslora: Annotated[bool | None, typer.Option("--rslora/--no-rslora", help="Rank-stabilised LoRA.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for data order and init.")] = None,
    seeds: SeedsOpt = 1,
    search: Annotated[str | None, typer.Option(help="Sweep learning rate, LoRA rank and steps and report each model's "
                                               "strongest attack within the capability bound: quick (8 points), "
                                               "full (32) or optuna:N.")] = None,
    effect: EffectOpt = 0.13,
    capability: CapabilityOpt = 48,
    suite: SuiteOpt = "traits",
    scorer: ScorerOpt = "likelihood",
    limit: LimitOpt = None,
    judge: JudgeOpt = None,
    runs_dir: RunsOpt = Path("runs"),
    name: NameOpt = None,
    *,
    load: LoadOptions,
) -> None:
    """Fine-tune each model on a harmful corpus along a dose ladder and re-score the same items at every dose."""
    as_json = check_format(format)
    if list_recipes:
        from persist.finetune_attacks.commands import print_recipes

        print_recipes(as_json)
        return
    from persist.jobs.finetune import FinetuneConfig, run_finetune_attack
    from persist.report.terminal import RichProgress, console, print_comparison, print_search
    from persist.report.write import write_reports

    lora = {k: v for k, v in {"rank": lora_rank, "alpha": lora_alpha, "targets": lora_targets,
                              "rslora": rslora}.items() if v is not None}
    train = {k: v for k, v in {"learning_rate": learning_rate, "batch_size": batch_size, "seed": seed}.items()
             if v is not None}
    if "batch_size" in train:
        train["micro_batch_size"] = min(train["batch_size"], 4) if train["batch_size"] % 4 == 0 else 1
    cfg = FinetuneConfig(model=model, baseline=baseline, recipe=recipe, doses=parse_doses(doses), corpus=corpus,
                         lora=lora, train=train, seeds=seeds, search=search, effect=effect, capability=capability,
                         suite=suite, limit=limit,
                         runs_dir=runs_dir, name=name, scorer=scorer_spec(scorer, judge=judge), load=load)
    if search is not None:
        from persist.jobs.sweep import run_search

        with RichProgress() as progress:
            result = run_search(cfg, progress)
        write_reports(result["folder"], result["report"], f"Fine-tune attack sweep ({recipe}, {search}): {model}")
        print_search(result["points"], result["worst"])
        console().print(f"reports: {result['folder']}/report.md, report.json", soft_wrap=True)
        return
    with RichProgress() as progress:
        result = run_finetune_attack(cfg, progress)
    report = result["report"]
    write_reports(result["folder"], report, f"Fine-tune attack ({recipe}): {model}")
    print_comparison(report.comparison.rows, report.comparison, report.capability)
    console().print(f"reports: {result['folder']}/report.md, report.json", soft_wrap=True)


@app.command()
@with_load_options
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
    matched_controls: MatchedOpt = True,
    seeds: SeedsOpt = 1,
    null: Annotated[bool, typer.Option("--null", help="Negative control: the baseline against itself, trained "
                                       "with other seeds (--model is ignored).")] = False,
    effect: EffectOpt = 0.13,
    capability: Annotated[int | None, typer.Option(help="Capability items scored beside alignment (default: the "
                                                   "profile's: quick 48, full all); 0 turns the check off.")] = None,
    worst_case: Annotated[bool, typer.Option("--worst-case", help="Also sweep the recipe's learning rate, LoRA rank "
                                             "and steps for each model and compare the two, each at its own "
                                             "strongest attack within the capability bound.")] = False,
    search: Annotated[str | None, typer.Option(help="The --worst-case sweep: quick (8 points), full (32) or "
                                               "optuna:N (needs pip install 'persist[search]').")] = None,
    suite: SuiteOpt = "traits",
    scorer: ScorerOpt = "likelihood",
    limit: LimitOpt = None,
    judge: JudgeOpt = None,
    runs_dir: RunsOpt = Path("runs"),
    name: NameOpt = None,
    *,
    load: LoadOptions,
) -> None:
    """The persistence protocol: clean, prompt attacks and fine-tune ladder for model and baseline; HTML report."""
    if search is not None and not worst_case:
        from persist.errors import ConfigError

        raise ConfigError(f"--search {search}: the study sweeps only with --worst-case; add --worst-case")
    from persist.jobs.study import StudyConfig, run_study
    from persist.report.markdown import study_comparison
    from persist.report.terminal import RichProgress, console, print_comparison, print_sweep
    from persist.report.write import study_title, write_study_reports

    cfg = StudyConfig(model=model, baseline=baseline, profile=profile, recipe=recipe,
                      control_recipe=None if control_recipe == "none" else control_recipe,
                      attacks=tuple(a for a in attacks.split(",") if a) if attacks is not None else None,
                      doses=parse_doses(doses), matched_controls=matched_controls, seeds=seeds, null=null,
                      effect=effect, suite=suite, limit=limit, **({} if capability is None else {"capability": capability}),
                      worst_case=(search or "quick") if worst_case else None,
                      runs_dir=runs_dir, name=name, scorer=scorer_spec(scorer, judge=judge), load=load)
    with RichProgress() as progress:
        result = run_study(cfg, progress)
    report = result["report"]
    write_study_reports(result["folder"], report, study_title(report))
    cmp = study_comparison(report)
    print_comparison(cmp.rows, cmp, report.capability)
    if report.sweep is not None:
        print_sweep(report.sweep)
    console().print(report.headline, highlight=False, soft_wrap=True)
    console().print(f"report: {result['folder']}/report.html (also report.md, report.json)", soft_wrap=True)


def main() -> None:
    """Console entry point: PersistError -> one red line and its exit code; anything else is a bug."""
    from persist.report.terminal import console

    try:
        code = app(standalone_mode=False)  # click returns typer.Exit codes instead of raising them here
        if code == 130:  # typer turns Ctrl-C into Exit(130)
            raise KeyboardInterrupt
        if isinstance(code, int) and code:
            sys.exit(code)
    except PersistError as exc:
        if os.environ.get("PERSIST_DEBUG"):
            raise
        from rich.markup import escape

        # escaped: a message may hold brackets (pip install 'persist[search]') that rich would read as markup
        console(stderr=True).print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, markup=True,
                                   soft_wrap=True)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        import shlex

        console(stderr=True).print(f"[yellow]interrupted[/yellow]; what is recorded is kept. Resume with: "
                                   f"{shlex.join(['persist', *sys.argv[1:]])}", highlight=False, soft_wrap=True)
        sys.exit(130)
    except Exception as exc:
        import click

        # typer >= 0.20 vendors click as typer._click: its exceptions are other classes than click's.
        for mod in {click, getattr(typer, "_click", click)}:
            if isinstance(exc, mod.exceptions.UsageError):
                console(stderr=True).print(f"[red]error:[/red] {exc.format_message()}", highlight=False,
                                           soft_wrap=True)
                sys.exit(2)
            exit_type = getattr(mod.exceptions, "Exit", None)
            if exit_type is not None and isinstance(exc, exit_type):
                sys.exit(exc.exit_code)
            if isinstance(exc, mod.ClickException):
                exc.show()
                sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
