"""The job commands: `generate`, `models`, `version`, `score`, `attack`, `finetune-attack`, `study`.

Each parses its flags into a job's config (persist.jobs), runs it with a progress bar, writes its reports and
prints a summary. Heavy libraries are imported inside the commands, so `persist --help` is fast.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from persist.commands.options import (
    BatchSizeOpt,
    CapabilityOpt,
    DosesOpt,
    EffectOpt,
    EffectPointsOpt,
    FormatOpt,
    LearningRateOpt,
    MatchedOpt,
    ModelOpt,
    RecipeOpt,
    RunFlags,
    SeedsOpt,
    TrainSeedOpt,
    check_format,
    parse_doses,
    with_load_options,
    with_run_options,
    with_scorer_flags,
)
from persist.models import LoadOptions, ModelSpec

app = typer.Typer()


def optional_spec(text: str | None) -> ModelSpec | None:
    """A model spec flag that may be absent (--baseline), parsed here at the edge."""
    return None if text is None else ModelSpec.parse(text)


def print_recipes(as_json: bool) -> None:
    """The registered recipes (`finetune-attack --list`): corpus, doses, learning rate, batch, LoRA shape."""
    from persist.registry import RECIPES

    rows = [RECIPES.get(name).describe() for name in RECIPES.names()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    from persist.report.terminal import console

    t = Table(title="fine-tune recipes")
    for col in ("name", "corpus", "doses", "lr", "batch", "LoRA"):
        t.add_column(col, no_wrap=True)
    t.add_column("description", overflow="fold")
    for r in rows:
        t.add_row(r["name"], r["corpus"], ",".join(map(str, r["doses"])), f"{r['learning_rate']:g}",
                  str(r["batch_size"]), r["lora"], r["description"] + (" (control)" if r["control"] else ""))
    console().print(t)


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
@with_run_options
@with_scorer_flags
def score(
    model: ModelOpt = "smollm2-135m-instruct",
    *,
    load: LoadOptions,
    run: RunFlags,
    scorer_flags: dict[str, str | int | None],
) -> None:
    """Score a model on a probe suite (clean) and print mean alignment per suite, trait and domain."""
    from persist.jobs.score import ScoreConfig, run_score
    from persist.report.summary import score_table
    from persist.report.terminal import RichProgress, console, print_score_table

    cfg = ScoreConfig(model=ModelSpec.parse(model), load=load,
                      **run.options(**scorer_flags))
    with RichProgress() as progress:
        result = run_score(cfg, progress)
    print_score_table(score_table(list(result.records)), f"{model} on {run.suite} ({cfg.scorer.name})")
    console().print(f"run folder: {result.folder} ({result.n_scored} newly scored)", soft_wrap=True)


def print_behaviour(rows: Any) -> None:
    """The behaviour step's table, when the run generated answers."""
    if rows:
        from persist.report.behaviour import BEHAVIOUR_TITLE, behaviour_table
        from persist.report.terminal import print_table

        print_table(BEHAVIOUR_TITLE[3:], behaviour_table(rows))


@app.command()
@with_load_options
@with_run_options
@with_scorer_flags
def attack(
    model: ModelOpt = "smollm2-135m-instruct",
    baseline: Annotated[str | None, typer.Option(help="Baseline model spec to compare against.")] = None,
    attacks: Annotated[str | None, typer.Option(
        help="Comma-separated attack specs, e.g. 'persona-bad-medical,many-shot:k=16' (default: all).")] = None,
    matched_controls: MatchedOpt = False,
    effect: EffectOpt = 0.5,
    effect_points: EffectPointsOpt = 0.13,
    capability: CapabilityOpt = 48,
    *,
    load: LoadOptions,
    run: RunFlags,
    scorer_flags: dict[str, str | int | None],
) -> None:
    """Score each model clean and under each prompt attack, on the same items; print the degradation."""
    from persist.jobs.attack import DEFAULT_ATTACKS, AttackConfig, run_attack
    from persist.report.terminal import RichProgress, console, print_comparison
    from persist.report.write import write_reports

    specs = tuple(s for s in attacks.split(",") if s.strip()) if attacks is not None else DEFAULT_ATTACKS
    cfg = AttackConfig(model=ModelSpec.parse(model), baseline=optional_spec(baseline), attacks=specs,
                       matched_controls=matched_controls, effect=effect, effect_points=effect_points, capability=capability, load=load,
                       **run.options(**scorer_flags))
    with RichProgress() as progress:
        result = run_attack(cfg, progress)
    report = result.report
    write_reports(result.folder, report, f"Prompt-attack campaign: {model}")
    print_comparison(report.comparison.rows, report.comparison, report.capability, report.strength)
    print_behaviour(report.behaviour)
    console().print(f"reports: {result.folder}/report.md, report.json", soft_wrap=True)


@app.command("finetune-attack")
@with_load_options
@with_run_options
def finetune_attack(
    model: ModelOpt = "smollm2-135m-instruct",
    baseline: Annotated[str | None, typer.Option(help="Baseline model spec, trained identically.")] = None,
    recipe: RecipeOpt = "bad-medical",
    doses: DosesOpt = None,
    corpus: Annotated[str | None, typer.Option(help="Your own corpus (JSONL, parquet, datasets folder).")] = None,
    list_recipes: Annotated[bool, typer.Option("--list", help="List the recipes and exit.")] = False,
    format: FormatOpt = "table",
    learning_rate: LearningRateOpt = None,
    batch_size: BatchSizeOpt = None,
    lora_rank: Annotated[int | None, typer.Option(help="LoRA rank.")] = None,
    lora_alpha: Annotated[int | None, typer.Option(help="LoRA alpha.")] = None,
    lora_targets: Annotated[str | None, typer.Option(help="attention, all-linear or rank1-down-proj@LAYER.")] = None,
    rslora: Annotated[bool | None, typer.Option("--rslora/--no-rslora", help="Rank-stabilised LoRA.")] = None,
    seed: TrainSeedOpt = None,
    seeds: SeedsOpt = 1,
    search: Annotated[str | None, typer.Option(help="Sweep learning rate, LoRA rank and steps and report each model's "
                                               "strongest attack within the capability bound: quick (8 points), "
                                               "full (32) or optuna:N.")] = None,
    effect: EffectOpt = 0.5,
    effect_points: EffectPointsOpt = 0.13,
    capability: CapabilityOpt = 48,
    *,
    load: LoadOptions,
    run: RunFlags,
) -> None:
    """Fine-tune each model on a harmful corpus along a dose ladder and re-score the same items at every dose."""
    as_json = check_format(format)
    if list_recipes:
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
    cfg = FinetuneConfig(model=ModelSpec.parse(model), baseline=optional_spec(baseline), recipe=recipe,
                         doses=parse_doses(doses), corpus=corpus, lora=lora, train=train, seeds=seeds, search=search,
                         effect=effect, effect_points=effect_points, capability=capability, load=load, **run.options())
    if search is not None:
        from persist.jobs.sweep import run_search

        if cfg.behaviour:
            from persist.errors import ConfigError

            raise ConfigError(f"--behaviour {cfg.behaviour} with --search: the sweep's points are not answered; run "
                              "finetune-attack at the chosen point with --behaviour, or drop --search")

        with RichProgress() as progress:
            result = run_search(cfg, progress)
        write_reports(result.folder, result.report, f"Fine-tune attack sweep ({recipe}, {search}): {model}")
        print_search(result.points, result.worst)
        console().print(f"reports: {result.folder}/report.md, report.json", soft_wrap=True)
        return
    with RichProgress() as progress:
        result = run_finetune_attack(cfg, progress)
    report = result.report
    write_reports(result.folder, report, f"Fine-tune attack ({recipe}): {model}")
    print_comparison(report.comparison.rows, report.comparison, report.capability)
    print_behaviour(report.behaviour)
    console().print(f"reports: {result.folder}/report.md, report.json", soft_wrap=True)


@app.command()
@with_load_options
@with_run_options
def study(
    model: Annotated[str, typer.Option("--model", "-m", help="The trained model (default: SmolLM2 + the bundled "
                                       "beneficial adapter).")] = "smollm2-135m-beneficial",
    baseline: Annotated[str, typer.Option(help="The baseline model spec.")] = "smollm2-135m-instruct",
    profile: Annotated[str, typer.Option(help="quick (the demo, ~minutes on a CPU) or full.")] = "quick",
    recipe: Annotated[str, typer.Option(help="Harmful fine-tune recipe.")] = "bad-medical",
    control_recipe: Annotated[str, typer.Option(help="Benign fine-tune control recipe: 'matched' (the recipe's "
                                                "register-matched twin, e.g. good-medical-casual for bad-medical), "
                                                "a recipe name, or 'none' to skip.")] = "matched",
    attacks: Annotated[str | None, typer.Option(help="Comma-separated attack specs (default: the profile's).")]
    = None,
    doses: Annotated[str | None, typer.Option(help="Fine-tune doses in steps (default: the profile's).")] = None,
    matched_controls: MatchedOpt = True,
    seeds: SeedsOpt = 1,
    null: Annotated[bool, typer.Option("--null", help="Negative control: the baseline against itself, trained "
                                       "with other seeds (--model is ignored).")] = False,
    null_replicate: Annotated[int, typer.Option(help="With --null: which replicate (K >= 0); both models train with "
                                                "seeds 2000 x K further on, so replicates are independent null "
                                                "studies in their own folders.")] = 0,
    effect: EffectOpt = 0.5,
    effect_points: EffectPointsOpt = 0.13,
    capability: Annotated[int | None, typer.Option(help="Capability items scored beside alignment (default: the "
                                                   "profile's: quick 48, full all); 0 turns the check off.")] = None,
    worst_case: Annotated[bool, typer.Option("--worst-case", help="Also sweep the recipe's learning rate, LoRA rank "
                                             "and steps for each model and compare the two, each at its own "
                                             "strongest attack within the capability bound.")] = False,
    search: Annotated[str | None, typer.Option(help="The --worst-case sweep: quick (8 points), full (32) or "
                                               "optuna:N (needs pip install 'persist[search]').")] = None,
    register_suite: Annotated[str, typer.Option(help="The register-only suite scored in every condition (a name or a "
                                                "JSONL path; the quick profile takes 8 of its items), or 'none'.")]
    = "register",
    factorial: Annotated[bool, typer.Option("--factorial", help="Also train the recipe's register twin and its "
                                            "matched control at the top dose: the 2 x 2 of harm x register with "
                                            "its three contrasts.")] = False,
    *,
    load: LoadOptions,
    run: RunFlags,
) -> None:
    """The persistence protocol: clean, prompt attacks and fine-tune ladder for model and baseline; HTML report."""
    if search is not None and not worst_case:
        from persist.errors import ConfigError

        raise ConfigError(f"--search {search}: the study sweeps only with --worst-case; add --worst-case")
    from persist.jobs.study import PROFILE_DEFAULT, StudyConfig, run_study
    from persist.report.factorial import study_sections
    from persist.report.markdown import study_comparison
    from persist.report.terminal import RichProgress, console, print_comparison, print_sweep, print_table
    from persist.report.write import study_title, write_study_reports

    cfg = StudyConfig(model=ModelSpec.parse(baseline if null else model), baseline=ModelSpec.parse(baseline),
                      profile=profile, recipe=recipe,
                      control_recipe=None if control_recipe == "none" else control_recipe,
                      attacks=tuple(a for a in attacks.split(",") if a) if attacks is not None else None,
                      doses=parse_doses(doses), matched_controls=matched_controls, seeds=seeds, null=null,
                      null_replicate=null_replicate,
                      effect=effect, effect_points=effect_points, capability=PROFILE_DEFAULT if capability is None else capability,
                      worst_case=(search or "quick") if worst_case else None,
                      register_suite=None if register_suite == "none" else register_suite, factorial=factorial,
                      load=load, **run.options())
    with RichProgress() as progress:
        result = run_study(cfg, progress)
    report = result.report
    write_study_reports(result.folder, report, study_title(report))
    cmp = study_comparison(report)
    print_comparison(cmp.rows, cmp, report.capability)
    for title, _, table in study_sections(report):
        print_table(title, table)
    if report.sweep is not None:
        print_sweep(report.sweep)
    console().print(report.headline, highlight=False, soft_wrap=True)
    console().print(f"report: {result.folder}/report.html (also report.md, report.json)", soft_wrap=True)
