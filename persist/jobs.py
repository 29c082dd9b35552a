"""Jobs the CLI runs, as config dataclasses + functions. The CLI only parses flags into these.

ScoreConfig / run_score: one model, one suite, one scorer, clean condition -> run folder + summary.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from persist.errors import ConfigError
from persist.models import LoadOptions
from persist.registry import SCORERS, SUITES
from persist.runner import CLEAN, clean_variant, run_units
from persist.schema import Item
from persist.store import RunStore
from persist.targets.base import GenerationConfig

# A progress reporter: stage(title, total) returns a function to call with the number of units just finished.
ProgressFn = Callable[[str, int], Callable[[int], None]]


def no_progress(title: str, total: int) -> Callable[[int], None]:
    return lambda n: None


@dataclass(frozen=True)
class ScorerConfig:
    """Which scorer, and for generation scorers the decoding and the judge."""

    name: str = "likelihood"
    judge: str | None = None
    judge_mode: str = "em"
    judge_read: str = "logprobs"
    max_new_tokens: int = 128
    refusal_classifier: str = "learned"

    def __post_init__(self) -> None:
        SCORERS.get(self.name)  # unknown name -> error with suggestion
        if self.name == "judge" and not self.judge:
            raise ConfigError("--scorer judge needs --judge SPEC (a model to grade answers)")
        if self.refusal_classifier not in ("learned", "rules"):
            raise ConfigError(f"--refusal-classifier {self.refusal_classifier!r}: use learned or rules")
        if self.max_new_tokens < 1:
            raise ConfigError(f"--max-new-tokens must be >= 1, got {self.max_new_tokens}")


def build_scorer(cfg: ScorerConfig, options: LoadOptions) -> Any:
    cls = SCORERS.get(cfg.name)
    gen = GenerationConfig(max_new_tokens=cfg.max_new_tokens)
    if cfg.name == "judge":
        from persist.targets import open_target

        return cls(open_target(cfg.judge, options), mode=cfg.judge_mode, read=cfg.judge_read, generation=gen)
    if cfg.name == "refusal":
        return cls(generation=gen, classifier=cfg.refusal_classifier)
    return cls()


def get_suite(name: str) -> Any:
    from probes.suites import get_suite as _get  # the suite plugin owns file-backed suites

    return _get(name)


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """What every job shares: which items, how they are scored, how models load, where the run folder goes."""

    suite: str = "traits"
    scorer: ScorerConfig = field(default_factory=ScorerConfig)
    limit: int | None = None
    load: LoadOptions = field(default_factory=LoadOptions)
    runs_dir: Path = Path("runs")
    name: str | None = None
    batch_size: int = 32

    def folder_name(self, default: str) -> str:
        """--name as given (the run store refuses unsafe names), or the job's default made safe for a folder."""
        if self.name:
            return self.name
        return "".join(c if c.isalnum() or c in "._-" else "_" for c in default)[:100]


@dataclass(frozen=True)
class ScoreConfig(RunOptions):
    model: str

    def run_name(self) -> str:
        return self.folder_name(f"score-{self.model}-{self.suite}")

    def header_config(self) -> dict[str, Any]:
        return {"job": "score", "model": self.model, "suite": self.suite, "scorer": asdict(self.scorer),
                "limit": self.limit, "load": asdict(self.load)}


def run_score(cfg: ScoreConfig, progress: ProgressFn = no_progress) -> dict[str, Any]:
    """Score a suite clean; returns {'folder', 'table', 'n_scored'}."""
    from persist.report.summary import score_table
    from persist.targets import open_target
    from probes.suites import select

    suite = get_suite(cfg.suite)
    items = select(suite.load(), cfg.limit)
    folder = RunStore.folder_for(cfg.runs_dir, cfg.run_name())
    # Resolve before creating the run folder: a bad model spec leaves nothing behind.
    target = open_target(cfg.model, cfg.load)
    scorer = build_scorer(cfg.scorer, cfg.load)
    store = RunStore.open(folder, cfg.header_config(), argv=sys.argv,
                          extra={"models": {"model": target.describe()}, "suite_version": suite.version,
                                 **scorer_extra(scorer, items)})
    advance = progress(f"scoring {len(items)} items of {cfg.suite}", len(items))
    n = run_units(store, role="model", target=target, scorer=scorer, units=[clean_variant(i) for i in items],
                  condition=CLEAN, suite_version=suite.version, batch_size=cfg.batch_size, on_progress=advance)
    return {"folder": folder, "table": score_table(list(store.records())), "n_scored": n}


def scorer_extra(scorer: Any, items: Sequence[Item]) -> dict[str, Any]:
    """Header fields for a scorer; a judge is calibrated on the run's own items (`probes check-judge`)."""
    extra: dict[str, Any] = {"scorer": scorer.config()}
    if getattr(scorer, "judge", None) is not None:
        from probes.judge import check_judge

        extra["judge_check"] = check_judge(scorer, [clean_variant(i) for i in items])
    return extra


def known_suites() -> list[str]:
    return SUITES.names()
