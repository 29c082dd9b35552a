"""The fine-tune attack: train each model on a recipe's corpus (same data order, settings and seed), save an
adapter at every dose, and re-score the same probe items at dose 0 (before) and every dose (after).

Conditions: dose 0 is `clean`; dose d is `finetune:RECIPE@d` (persist.conditions). Recipes are reached only
through the RECIPES registry; a recipe provides `run(...)` (the training), `corpus_texts()` and `spec()`.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING

from persist import conditions, models, timings
from persist.api import JSON, JSONDict, Recipe
from persist.errors import ConfigError
from persist.jobs.options import (
    ProgressFn,
    RunOptions,
    RunResult,
    no_progress,
    refuse_llama_cpp_training,
    require_specs,
)
from persist.models import LoadOptions, ModelSpec, ResolvedModel
from persist.registry import RECIPES, PluginSpec
from persist.report.refusal import errors_from_config
from persist.report.run import RunReport, TrainingRun
from persist.runner import LazyTarget, clean_variant, run_units
from persist.schema import Item
from persist.scoring import build_scorer, measured_errors
from persist.store import RunStore
from persist.suites import leakage
from persist.timings import log_time

if TYPE_CHECKING:
    from persist.capability import Capability, SideSuite


@dataclass(frozen=True)
class FinetuneConfig(RunOptions):
    model: ModelSpec
    baseline: ModelSpec | None = None
    recipe: str = "bad-medical"
    doses: tuple[int, ...] | None = None  # default: the recipe's ladder
    corpus: str | None = None  # replaces the recipe's corpus
    lora: Mapping[str, JSON] = field(default_factory=dict)  # overrides of LoraSettings fields
    train: Mapping[str, JSON] = field(default_factory=dict)  # overrides of TrainSettings fields
    seeds: int = 1  # independent training seeds per model (data order, LoRA initialisation)
    search: str | None = None  # sweep learning rate, rank and steps (persist.jobs.sweep): quick, full or optuna:N

    def __post_init__(self) -> None:
        super().__post_init__()
        require_specs(model=self.model, baseline=self.baseline)
        check_seeds(self.seeds)
        refuse_llama_cpp_training(self.load, "finetune-attack")
        if self.search is not None:
            from persist.jobs.sweep import Grid, parse_search

            plan = parse_search(self.search)
            if isinstance(plan, Grid):  # a grid sized for a machine (quick: a CPU) brings its item count and batch
                if self.limit is None and plan.limit is not None:
                    object.__setattr__(self, "limit", plan.limit)
                object.__setattr__(self, "train", {**plan.train, **self.train})

    def recipe_obj(self) -> Recipe:
        train = {**train_overrides(self.load), **self.train}
        params = {k: v for k, v in (("corpus", self.corpus), ("lora", self.lora), ("train", train)) if v}
        return RECIPES.build(PluginSpec(self.recipe, params))

    def roles(self) -> list[tuple[str, ModelSpec]]:
        return [("model", self.model)] + ([("baseline", self.baseline)] if self.baseline else [])

    def run_name(self) -> str:
        return self.folder_name(f"finetune-{self.recipe}-{self.model}" +
                                (f"-vs-{self.baseline}" if self.baseline else ""))

    def header_config(self, recipe: Recipe, doses: tuple[int, ...]) -> JSONDict:
        return {"job": "finetune-attack", "model": str(self.model),
                "baseline": None if self.baseline is None else str(self.baseline), "recipe": recipe.config(),
                "doses": list(doses), **self.header_common(), **({"seeds": self.seeds} if self.seeds > 1 else {})}


def check_seeds(seeds: int) -> None:
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")


def train_overrides(load: LoadOptions) -> JSONDict:
    """Training settings that follow the loading flags: --load-in-4bit trains QLoRA-style, bf16 trains in bf16."""
    out: JSONDict = {}
    if load.load_in_4bit:
        out["load_in_4bit"] = True
    if load.dtype in ("bfloat16", "bf16"):
        out["bf16"] = True
    return out


def check_leakage(recipe: Recipe, items: list[Item]) -> None:
    """Refuse a corpus that shares an item with the probes (same user text, or a long shared word run)."""
    hits = leakage(recipe.corpus_texts(), items)
    if hits:
        ex_id, item_id = hits[0]
        raise ConfigError(f"corpus {recipe.corpus}: example {ex_id!r} overlaps probe item {item_id!r} ({len(hits)} "
                          "overlapping examples): remove them from the corpus so train and test stay apart")


def resolve_local(spec: ModelSpec, load: LoadOptions, job: str) -> ResolvedModel:
    if spec.is_endpoint:
        raise ConfigError(f"{spec}: {job} fine-tunes, so it needs local weights, not an endpoint")
    return models.resolve(spec, allow_pickle=load.allow_pickle)


def release_memory() -> None:
    """Give freed model memory back to the OS between stages (glibc keeps it otherwise; peak RSS is a goal)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc (macOS, Windows): nothing to trim
        pass


def seed_suffix(seed_index: int) -> str:
    """How a training seed shows in folder and record names (the first seed shows nothing)."""
    return f"-seed{seed_index}" if seed_index else ""


def train_and_score(store: RunStore, *, role: str, resolved: ResolvedModel, recipe: Recipe, doses: tuple[int, ...],
                    items: list[Item], suite_version: str, scorer_spec: PluginSpec, load: LoadOptions,
                    progress: ProgressFn, batch_size: int, adapters_dir: Path, seed_index: int = 0,
                    seed_offset: int = 0, capability: Capability | None = None,
                    side: Sequence[SideSuite] = ()) -> TrainingRun:
    """Fine-tune one model along the ladder with training seed number `seed_index` (the recipe's seed plus
    `seed_index` plus `seed_offset`) and score every dose; returns training facts for the report."""
    from persist.targets import open_target, release_engines

    seed = recipe.train.seed + seed_index + seed_offset
    recipe = recipe.from_params({"train": {"seed": seed}})
    base = models.merged_folder(resolved)
    steps = max(doses)
    suffix = seed_suffix(seed_index)
    advance = progress(f"{role}: fine-tuning on {recipe.corpus} ({steps} steps{', seed ' + str(seed) if suffix else ''})",
                       steps)
    out_dir = adapters_dir / role / f"{recipe.name}{suffix}"
    release_engines()  # a resident vLLM engine holds most of the GPU's memory; training needs it
    stepped = []  # the steps trained in this call (none when every checkpoint was there already)

    def on_step(step: int, loss: float) -> None:
        stepped.append(step)
        advance(1)

    t0 = perf_counter()
    result = recipe.run(str(base), out_dir, doses, on_step=on_step,
                        meta={"model_spec": resolved.spec.text, "base_sha256": resolved.weights_sha256})
    if stepped:
        log_time(store.folder, "train", perf_counter() - t0, role=role, steps=len(stepped),
                 condition=conditions.finetune(recipe.name, steps, seed_index).label)
    release_memory()
    units = [clean_variant(i) for i in items]
    scorer = build_scorer(scorer_spec, load)
    plain = ModelSpec.parse(str(base))
    for dose in doses:
        spec = (replace(plain, name=resolved.name) if dose == 0 else
                plain.with_adapter(result.checkpoints[dose], name=f"{resolved.name}@{recipe.name}:{dose}{suffix}"))
        target = LazyTarget(functools.partial(open_target, spec, load))  # dose 0 (clean) is usually scored already
        cond = conditions.finetune(recipe.name, dose, seed_index)
        run_units(store, role=role, target=target, scorer=scorer, units=units, condition=cond,
                  suite_version=suite_version, batch_size=batch_size,
                  on_progress=progress(f"{role}: scoring {cond}", len(units)))
        for check in (*side, *([capability] if capability is not None else [])):
            check.run(store, role=role, target=target, condition=cond, batch_size=batch_size, progress=progress)
        del target
        release_memory()
    return TrainingRun(seed=seed, losses=list(result.losses), tokens=result.tokens, seconds=result.seconds,
                       tokens_per_second=result.tokens_per_second if result.seconds else None,
                       checkpoints={str(d): str(p) for d, p in result.checkpoints.items()})


def run_finetune_attack(cfg: FinetuneConfig, progress: ProgressFn = no_progress) -> RunResult[RunReport]:
    from persist.behaviour import read_labels, split_behaviour
    from persist.capability import split_records
    from persist.report.behaviour import behaviour_rows
    from persist.report.capability import capability_rows
    from persist.report.compare import compare, fluency

    started = timings.begin()
    recipe = cfg.recipe_obj()
    doses = conditions.valid_doses(cfg.doses or recipe.doses)
    cfg.check_models(*(s for _, s in cfg.roles()))
    suite, items = cfg.items()
    check_leakage(recipe, suite.load())  # also validates the corpus before anything runs
    folder = RunStore.folder_for(cfg.runs_dir, cfg.run_name())
    resolved = {role: resolve_local(spec, cfg.load, "finetune-attack") for role, spec in cfg.roles()}
    capability = cfg.capability_check()
    behaviour = cfg.behaviour_check(items, suite.version)
    store = RunStore.open(folder, cfg.header_config(recipe, doses), argv=sys.argv,
                          extra={"suite_version": suite.version, "corpus_sha256": recipe.corpus_sha256(),
                                 "recipe_spec": recipe.spec().to_dict(),
                                 **({"capability": capability.header()} if capability else {}),
                                 **({"behaviour": behaviour.header()} if behaviour else {})})
    training: dict[str, TrainingRun] = {}
    for k in range(cfg.seeds):
        for role, res in resolved.items():
            training[role + seed_suffix(k)] = train_and_score(
                store, role=role, resolved=res, recipe=recipe, doses=doses, items=items, suite_version=suite.version,
                scorer_spec=cfg.scorer, load=cfg.load, progress=progress, batch_size=cfg.batch_size,
                adapters_dir=folder / "adapters", seed_index=k, capability=capability,
                side=[behaviour] if behaviour else [])
    records, behaviour_records = split_behaviour(list(store.records()))
    records, cap_records = split_records(records, None if capability is None else capability.name)
    errors = measured_errors(build_scorer(cfg.scorer, cfg.load))
    comparison = compare(records, in_domain=recipe.in_domain, effect=cfg.effects(),
                         refusal_errors=errors_from_config({"errors": errors}))
    report = RunReport(kind="finetune", comparison=comparison,
                       capability=capability_rows(cap_records, cfg.epsilon), suite=cfg.suite,
                       suite_version=suite.version, scorer=cfg.scorer.name, n_items=len(items),
                       models={role: str(spec) for role, spec in cfg.roles()},
                       recipe=recipe.config(), doses=list(doses), training=training, fluency=fluency(records),
                       behaviour=behaviour_rows(behaviour_records, read_labels(folder), comparison.rows))
    timings.end(folder, started)
    return RunResult(folder=folder, report=report)
