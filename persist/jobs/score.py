"""`persist score`: one model, one suite, one scorer, clean condition -> a run folder and its records."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from persist.api import JSONDict
from persist.behaviour import split_behaviour
from persist.conditions import CLEAN
from persist.jobs.options import ProgressFn, RunOptions, RunResult, no_progress, require_specs, scorer_extra
from persist.models import ModelSpec
from persist.runner import clean_variant, run_units
from persist.scoring import build_scorer
from persist.store import RunStore


@dataclass(frozen=True)
class ScoreConfig(RunOptions):
    model: ModelSpec

    def __post_init__(self) -> None:
        super().__post_init__()
        require_specs(model=self.model)

    def run_name(self) -> str:
        return self.folder_name(f"score-{self.model}-{self.suite}")

    def header_config(self) -> JSONDict:
        return {"job": "score", "model": str(self.model), **self.header_common()}


def run_score(cfg: ScoreConfig, progress: ProgressFn = no_progress) -> RunResult[None]:
    """Score a suite clean; returns {'folder', 'records', 'n_scored'}."""
    from persist.targets import open_target

    cfg.check_models(cfg.model)
    suite, items = cfg.items()
    folder = RunStore.folder_for(cfg.runs_dir, cfg.run_name())
    # Load before creating the run folder: a bad model spec leaves nothing behind.
    target = open_target(cfg.model, cfg.load)
    scorer = build_scorer(cfg.scorer, cfg.load)
    store = RunStore.open(folder, cfg.header_config(), argv=sys.argv,
                          extra={"models": {"model": target.describe()}, "suite_version": suite.version,
                                 **scorer_extra(scorer, items)})
    advance = progress(f"scoring {len(items)} items of {cfg.suite}", len(items))
    n = run_units(store, role="model", target=target, scorer=scorer, units=[clean_variant(i) for i in items],
                  condition=CLEAN, suite_version=suite.version, batch_size=cfg.batch_size, on_progress=advance)
    behaviour = cfg.behaviour_check(items, suite.version)
    if behaviour is not None:  # the clean answers (graded with --judge, or later by hand labels)
        store.update_header(behaviour=behaviour.header())
        behaviour.run(store, role="model", target=target, condition=CLEAN, batch_size=cfg.batch_size,
                      progress=progress)
    records, _ = split_behaviour(list(store.records()))
    return RunResult(folder=folder, report=None, records=tuple(records), n_scored=n)
