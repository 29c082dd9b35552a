"""`persist study`: the whole persistence protocol for a model and a baseline, in one resumable run folder.

For both models, on identical items, seeds and data order:
  1. clean scores;
  2. the prompt-attack campaign (conditions `attack:...`, the helpful persona as a control);
  3. the fine-tune ladder of a recipe (default bad-medical, conditions `finetune:RECIPE@dose`) and its benign
     control recipe (default good-medical) at the top dose.
Each stage appends records through the same runner, so a rerun continues where it stopped. The report is a
pure function of the records (study_report), with fixed bootstrap/permutation seeds: same records, same bytes.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from persist import models
from persist.campaign import DEFAULT_ATTACKS, build_attack, condition_name
from persist.errors import ConfigError
from persist.jobs import ProgressFn, RunOptions, build_scorer, get_suite, no_progress, scorer_extra
from persist.ladder import dose_condition, release_memory, train_and_score, valid_doses
from persist.registry import RECIPES
from persist.runner import CLEAN, clean_variant, run_units
from persist.store import RunStore


@dataclass(frozen=True)
class Profile:
    limit: int | None
    attacks: tuple[str, ...]
    doses: tuple[int, ...] | None  # None: the recipe's own ladder
    description: str
    train: dict[str, Any] = field(default_factory=dict)  # TrainSettings overrides for both recipes


PROFILES = {
    # Sized for `make demo` on a 2-core CPU: 24 items (3 per trait, every domain), 4 single-variant attacks,
    # a 3-point dose ladder. Wide intervals by design; use `full` for numbers you would publish.
    "quick": Profile(limit=24, attacks=("persona-bad-medical", "persona-helpful-medical", "refusal-suppression",
                                        "many-shot:k=4"), doses=(0, 4, 8),
                     description="24 items, 4 attacks, doses 0/4/8 steps of 4 examples at lr 1e-3 (the demo)",
                     # a CPU trains SmolLM2 at ~125 tokens/s: few, small, strong steps instead of a real ladder
                     train={"batch_size": 4, "micro_batch_size": 4, "learning_rate": 1e-3, "max_length": 256}),
    "full": Profile(limit=None, attacks=DEFAULT_ATTACKS, doses=None,
                    description="every item, every default attack, the recipe's dose ladder"),
}


@dataclass(frozen=True)
class StudyConfig(RunOptions):
    model: str = "smollm2-135m-beneficial"
    baseline: str = "smollm2-135m-instruct"
    profile: str = "quick"
    recipe: str = "bad-medical"
    control_recipe: str | None = "good-medical"
    attacks: tuple[str, ...] | None = None  # default: the profile's
    doses: tuple[int, ...] | None = None  # default: the profile's, else the recipe's

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ConfigError(f"--profile {self.profile!r}: choose from {', '.join(PROFILES)}")
        if self.model == self.baseline:
            raise ConfigError("--model and --baseline are the same spec; a study compares two models")

    @property
    def prof(self) -> Profile:
        return PROFILES[self.profile]

    def resolved_attacks(self) -> tuple[str, ...]:
        return self.attacks if self.attacks is not None else self.prof.attacks

    def resolved_doses(self) -> tuple[int, ...]:
        return valid_doses(self.doses or self.prof.doses or RECIPES.get(self.recipe).doses)

    def resolved_limit(self) -> int | None:
        return self.limit if self.limit is not None else self.prof.limit

    def recipe_obj(self, name: str) -> Any:
        return RECIPES.get(name).with_overrides(train=self.prof.train)

    def run_name(self) -> str:
        return self.folder_name(f"study-{self.model}-vs-{self.baseline}-{self.profile}")

    def header_config(self) -> dict[str, Any]:
        return {"job": "study", "model": self.model, "baseline": self.baseline, "profile": self.profile,
                "recipe": self.recipe_obj(self.recipe).config(),
                "control_recipe": self.recipe_obj(self.control_recipe).config() if self.control_recipe else None,
                "attacks": list(self.resolved_attacks()), "doses": list(self.resolved_doses()),
                "limit": self.resolved_limit(), "suite": self.suite, "scorer": asdict(self.scorer),
                "load": asdict(self.load)}


def check_leakage(corpus: Any, items: list[Any]) -> None:
    """Refuse a corpus that shares an item with the probes (same user text, or a long shared word run)."""
    from finetune_attacks.corpora import leakage

    hits = leakage(corpus, items)
    if hits:
        ex_id, item_id = hits[0]
        raise ConfigError(f"{corpus.path}: example {ex_id!r} overlaps probe item {item_id!r} ({len(hits)} "
                          "overlapping examples): remove them from the corpus so train and test stay apart")


def run_study(cfg: StudyConfig, progress: ProgressFn = no_progress) -> dict[str, Any]:
    from persist.targets import open_target
    from probes.suites import select

    attacks = [build_attack(s) for s in cfg.resolved_attacks()]
    doses = cfg.resolved_doses()
    recipe = cfg.recipe_obj(cfg.recipe)
    control = cfg.recipe_obj(cfg.control_recipe) if cfg.control_recipe else None
    suite = get_suite(cfg.suite)
    items = select(suite.load(), cfg.resolved_limit())
    for r in (recipe, control):
        if r is not None:
            check_leakage(r.load_corpus(), suite.load())
    roles = [("model", cfg.model), ("baseline", cfg.baseline)]
    for _, spec in roles:
        if spec.startswith("openai:"):
            raise ConfigError(f"{spec}: a study fine-tunes, so it needs local weights, not an endpoint")
        models.resolve(spec, allow_pickle=cfg.load.allow_pickle)
    folder = RunStore.folder_for(cfg.runs_dir, cfg.run_name())
    scorer = build_scorer(cfg.scorer, cfg.load)
    store = RunStore.open(folder, cfg.header_config(), argv=sys.argv,
                          extra={"suite_version": suite.version, **scorer_extra(scorer, items),
                                 "attacks": {condition_name(a): a.params() | {"version": a.version}
                                             for a in attacks}})
    units = {CLEAN: [clean_variant(i) for i in items]}
    for a in attacks:
        units[condition_name(a)] = [v for i in items for v in a.transform(i)]
    training: dict[str, Any] = {}
    for role, spec in roles:  # stage 1+2: clean and prompt attacks, one model load per role
        target = open_target(spec, cfg.load)
        for cond, us in units.items():
            run_units(store, role=role, target=target, scorer=scorer, units=us, condition=cond,
                      suite_version=suite.version, batch_size=cfg.batch_size,
                      on_progress=progress(f"{role}: {cond} ({len(us)} units)", len(us)))
        del target
        release_memory()
    for role, spec in roles:  # stage 3: fine-tune ladder, then the benign control at the top dose
        for r, ds in ((recipe, doses), (control, (0, max(doses)))):
            if r is None:
                continue
            training[f"{role}/{r.name}"] = train_and_score(
                store, role=role, spec=spec, recipe=r, doses=ds, items=items, suite_version=suite.version,
                cfg_scorer=cfg.scorer, load=cfg.load, progress=progress, batch_size=cfg.batch_size,
                adapters_dir=folder / "adapters")
            release_memory()
    controls = [condition_name(a) for a in attacks if a.control]
    if control is not None:
        controls.append(dose_condition(control.name, max(doses)))
    meta = {"models": dict(roles), "profile": cfg.profile, "suite": cfg.suite, "suite_version": suite.version,
            "scorer": cfg.scorer.name, "recipe": recipe.name, "control_recipe": control and control.name,
            "doses": list(doses), "attacks": [condition_name(a) for a in attacks], "controls": controls,
            "n_items": len(items), "in_domain": recipe.in_domain or "health",
            "judge_check": store.header().get("judge_check")}
    store.update_header(study_meta=meta, training={k: {"tokens": v["tokens"], "seconds": v["seconds"],
                                                       "tokens_per_second": v["tokens_per_second"]}
                                                   for k, v in training.items()})
    from persist.report.study import study_report

    report = study_report(list(store.records()), meta)
    return {"folder": folder, "report": report, "training": training}
