"""The fine-tune attack: train each model on a recipe's corpus (same data order, settings and seed), save an
adapter at every dose, and re-score the same probe items at dose 0 (before) and every dose (after).

Conditions: dose 0 is `clean`; dose d is `finetune:RECIPE@d`. Reached only through the RECIPES registry.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from persist import models
from persist.errors import ConfigError
from persist.jobs import ProgressFn, RunOptions, ScorerConfig, build_scorer, get_suite, no_progress
from persist.models import LoadOptions
from persist.registry import RECIPES
from persist.runner import CLEAN, clean_variant, run_units
from persist.store import RunStore


def dose_condition(recipe: str, dose: int) -> str:
    return CLEAN if dose == 0 else f"finetune:{recipe}@{dose}"


@dataclass(frozen=True)
class FinetuneConfig(RunOptions):
    model: str
    baseline: str | None = None
    recipe: str = "bad-medical"
    doses: tuple[int, ...] | None = None  # default: the recipe's ladder
    corpus: str | None = None  # replaces the recipe's corpus
    lora: dict[str, Any] = field(default_factory=dict)  # overrides of LoraSettings fields
    train: dict[str, Any] = field(default_factory=dict)  # overrides of TrainSettings fields

    def recipe_obj(self) -> Any:
        return RECIPES.get(self.recipe).with_overrides(corpus=self.corpus, lora=self.lora, train=self.train)

    def run_name(self) -> str:
        return self.folder_name(f"finetune-{self.recipe}-{self.model}" +
                                (f"-vs-{self.baseline}" if self.baseline else ""))

    def header_config(self, doses: tuple[int, ...]) -> dict[str, Any]:
        return {"job": "finetune-attack", "model": self.model, "baseline": self.baseline,
                "recipe": self.recipe_obj().config(), "doses": list(doses), "suite": self.suite,
                "scorer": asdict(self.scorer), "limit": self.limit, "load": asdict(self.load)}


def valid_doses(doses: tuple[int, ...]) -> tuple[int, ...]:
    if not doses:
        raise ConfigError("--doses is empty; give steps such as 0,25,50,100")
    bad = [d for d in doses if d < 0]
    if bad:
        raise ConfigError(f"--doses must be >= 0 optimizer steps; got {bad}")
    if max(doses) == 0:
        raise ConfigError("--doses has no positive dose; add steps such as 25,50")
    return tuple(sorted(set(doses) | {0}))


def release_memory() -> None:
    """Give freed model memory back to the OS between stages (glibc keeps it otherwise; peak RSS is a goal)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc (macOS, Windows): nothing to trim
        pass


def train_and_score(store: RunStore, *, role: str, spec: str, recipe: Any, doses: tuple[int, ...], items: list,
                    suite_version: str, cfg_scorer: ScorerConfig, load: LoadOptions, progress: ProgressFn,
                    batch_size: int, adapters_dir: Path) -> dict[str, Any]:
    """Fine-tune one model along the ladder and score every dose; returns training facts for the report."""
    from persist.targets import open_target

    resolved = models.resolve(spec, allow_pickle=load.allow_pickle)
    base = models.merged_folder(resolved)
    steps = max(doses)
    advance = progress(f"{role}: fine-tuning on {recipe.corpus} ({steps} steps)", steps)
    out_dir = adapters_dir / role / recipe.name
    result = recipe.run(str(base), out_dir, doses, on_step=lambda s, loss: advance(1),
                        meta={"model_spec": spec, "base_sha256": resolved.weights_sha256})
    release_memory()
    units = [clean_variant(i) for i in items]
    for dose in doses:
        spec_d = str(base) if dose == 0 else f"{base}+{result.checkpoints[dose]}"
        target = open_target(spec_d, load)
        target.name = spec if dose == 0 else f"{spec}@{recipe.name}:{dose}"
        scorer = build_scorer(cfg_scorer, load)
        cond = dose_condition(recipe.name, dose)
        run_units(store, role=role, target=target, scorer=scorer, units=units, condition=cond,
                  suite_version=suite_version, batch_size=batch_size,
                  on_progress=progress(f"{role}: scoring {cond}", len(units)))
        del target
        release_memory()
    return {"losses": result.losses, "tokens": result.tokens, "seconds": result.seconds,
            "tokens_per_second": result.tokens_per_second if result.seconds else None,
            "checkpoints": {str(d): str(p) for d, p in result.checkpoints.items()}}


def run_finetune_attack(cfg: FinetuneConfig, progress: ProgressFn = no_progress) -> dict[str, Any]:
    from persist.report.compare import compare, fluency
    from probes.suites import select

    recipe = cfg.recipe_obj()
    doses = valid_doses(cfg.doses or recipe.doses)
    recipe_corpus = recipe.load_corpus()  # validated before anything runs
    suite = get_suite(cfg.suite)
    items = select(suite.load(), cfg.limit)
    folder = RunStore.folder_for(cfg.runs_dir, cfg.run_name())
    roles = [("model", cfg.model)] + ([("baseline", cfg.baseline)] if cfg.baseline else [])
    for _, spec in roles:  # bad specs fail before the run folder exists
        if spec.startswith("openai:"):
            raise ConfigError(f"{spec}: fine-tuning needs local weights, not an endpoint")
        models.resolve(spec, allow_pickle=cfg.load.allow_pickle)
    store = RunStore.open(folder, cfg.header_config(doses), argv=sys.argv,
                          extra={"suite_version": suite.version, "corpus_sha256": recipe_corpus.sha256})
    training = {}
    for role, spec in roles:
        training[role] = train_and_score(store, role=role, spec=spec, recipe=recipe, doses=doses, items=items,
                                         suite_version=suite.version, cfg_scorer=cfg.scorer, load=cfg.load,
                                         progress=progress, batch_size=cfg.batch_size,
                                         adapters_dir=folder / "adapters")
    records = list(store.records())
    report = compare(records, in_domain=recipe.in_domain or "health")
    report.update(kind="finetune", schema_version=1, recipe=recipe.config(), doses=list(doses), suite=cfg.suite,
                  suite_version=suite.version, scorer=cfg.scorer.name, n_items=len(items),
                  models={"model": cfg.model, **({"baseline": cfg.baseline} if cfg.baseline else {})},
                  training=training, fluency=fluency(records))
    return {"folder": folder, "report": report}
