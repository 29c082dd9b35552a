"""`persist study`: the whole persistence protocol for a model and a baseline, in one resumable run folder.

For both models, on identical items, seeds and data order:
  1. clean scores;
  2. the prompt-attack campaign (conditions `attack:...`, the helpful persona as a control);
  3. the fine-tune ladder of a recipe (default bad-medical, conditions `finetune:RECIPE@dose`) and its benign
     control recipe (default good-medical) at the top dose;
  4. with --worst-case: a sweep of the recipe's learning rate, LoRA rank and steps (persist.jobs.sweep, conditions
     `finetune:RECIPE[lr=...,r=...]@steps`), so each model can be compared at its own worst case within the
     capability bound.
Each stage appends records through the same runner, so a rerun continues where it stopped. The report is a
pure function of the records (study_report), with fixed bootstrap/permutation seeds: same records, same bytes.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

from persist import conditions, timings
from persist.api import JSON, JSONDict, Recipe, Suite
from persist.capability import REGISTER_SUITE, Capability, SideSuite
from persist.errors import ConfigError
from persist.jobs.attack import (
    DEFAULT_ATTACKS,
    OPTIMISED_ATTACKS,
    build_attacks,
    control_pairs,
    control_sets,
    score_attacks,
    with_companions,
    with_matched_controls,
)
from persist.jobs.finetune import (
    check_leakage,
    check_seeds,
    release_memory,
    resolve_local,
    seed_suffix,
    train_and_score,
    train_overrides,
)
from persist.jobs.options import (
    LIKELIHOOD,
    ProgressFn,
    RunOptions,
    RunResult,
    load_header,
    no_progress,
    refuse_llama_cpp_training,
    require_specs,
    scorer_extra,
)
from persist.jobs.sweep import parse_search, sweep
from persist.models import ModelSpec
from persist.registry import RECIPES, PluginSpec
from persist.report.model import StudyMeta, StudyReport
from persist.report.run import TrainingRun
from persist.schema import Item
from persist.scoring import build_scorer, measured_errors
from persist.store import RunStore
from persist.suites import get_suite, select

NULL_SEED_OFFSET = 1000  # a null study's "model" trains with seeds this far from the baseline's
NULL_REPLICATE_STRIDE = 2000  # replicate K of a null study trains both roles K * this further on (other seeds)
PROFILE_DEFAULT = -1  # StudyConfig.capability: take the profile's number of capability items
MATCHED = "matched"  # StudyConfig.control_recipe: the recipe's own register-matched control (Recipe.matched_control)


@dataclass(frozen=True)
class Profile:
    limit: int | None
    attacks: tuple[str, ...]
    doses: tuple[int, ...] | None  # None: the recipe's own ladder
    description: str
    train: Mapping[str, JSON] = field(default_factory=dict)  # TrainSettings overrides for both recipes
    capability: int | None = None  # capability items (None: all)
    capability_under_attacks: bool = True
    register: int | None = None  # items of the register-only suite scored in every condition (None: all)
    register_under_attacks: bool = True  # also under prompt attacks (their rows in "Content or register?")


PROFILES = {
    # Sized for `make demo` on a 2-core CPU (<= 10 minutes): 16 items (2 per trait, every domain) with the register-
    # crossed references, scored in fp32, the paper's persona attack with its length-matched control, one fine-tune
    # dose, and 48 capability and 8 register-only items before and after each fine-tune. The side suites are not
    # scored under the prompt attacks. A profiled demo (2026-12-07) spent 69% of its time scoring likelihoods, near
    # the fp32 matmul roofline, so the item count is the lever: 24 items took 10:15. Wide intervals by design; use
    # `full` for numbers you would publish.
    "quick": Profile(limit=16, attacks=("persona-bad-medical",), doses=(0, 8), capability=48,
                     capability_under_attacks=False, register=8, register_under_attacks=False,
                     description="16 items, the bad-medical persona (+ its length-matched control), doses 0/8 "
                                 "steps of 4 examples at lr 1e-3, 48 capability items and 8 register-only items "
                                 "at each dose (the demo)",
                     # a CPU trains SmolLM2 at ~125 tokens/s: few, small, strong steps instead of a real ladder
                     train={"batch_size": 4, "micro_batch_size": 4, "learning_rate": 1e-3, "max_length": 256}),
    "full": Profile(limit=None, attacks=DEFAULT_ATTACKS + OPTIMISED_ATTACKS, doses=None,
                    description="every item, every default attack and the optimised ones (GCG suffix and its transfer, "
                                "steering, best-of-N, PAIR), the recipe's dose ladder, every capability "
                                "item under every condition"),
}


@dataclass(frozen=True)
class StudyConfig(RunOptions):
    model: ModelSpec = field(default_factory=lambda: ModelSpec.parse("smollm2-135m-beneficial"))
    baseline: ModelSpec = field(default_factory=lambda: ModelSpec.parse("smollm2-135m-instruct"))
    profile: str = "quick"
    recipe: str = "bad-medical"
    control_recipe: str | None = MATCHED  # MATCHED: the recipe's register-matched benign control; None: none
    attacks: tuple[str, ...] | None = None  # default: the profile's
    doses: tuple[int, ...] | None = None  # default: the profile's, else the recipe's
    matched_controls: bool = True  # a length-matched neutral control for each attack that only adds context
    seeds: int = 1  # training seeds per model and dose
    null: bool = False  # negative control: the baseline against itself, trained with other seeds
    null_replicate: int = 0  # which replicate of the null study: both roles train with seeds K * stride further on
    capability: int | None = PROFILE_DEFAULT  # capability items; PROFILE_DEFAULT: the profile's
    worst_case: str | None = None  # a sweep plan (quick, full, optuna:N): compare each model at its own worst case
    # The register-only suite (name or JSONL path) scored in every condition with the likelihood scorer, so each
    # condition's register shift sits beside its alignment shift; None: off.
    register_suite: str | None = REGISTER_SUITE
    # Also train the recipe's register twin and the twin's matched control at the top dose: the 2 x 2 of harm x
    # register (persist.report.factorial).
    factorial: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.profile not in PROFILES:
            raise ConfigError(f"--profile {self.profile!r}: choose from {', '.join(PROFILES)}")
        check_seeds(self.seeds)
        if self.null_replicate < 0 or (self.null_replicate and not self.null):
            raise ConfigError(f"--null-replicate {self.null_replicate}: a replicate number >= 0, with --null only")
        require_specs(model=self.model, baseline=self.baseline)
        refuse_llama_cpp_training(self.load, "study")
        if self.worst_case is not None:
            parse_search(self.worst_case)
            if self.resolved_capability() == 0:
                raise ConfigError("--worst-case needs the capability check (the utility bound): drop --capability 0 "
                                  "or pass a number of capability items")
        if self.factorial:
            self.factorial_recipes()
        if str(self.trained) == str(self.baseline) and not self.null:
            raise ConfigError("--model and --baseline are the same spec; a study compares two models (or pass "
                              "--null to compare the baseline with itself as a negative control)")

    @property
    def prof(self) -> Profile:
        return PROFILES[self.profile]

    def roles(self) -> list[tuple[str, ModelSpec]]:
        return [("model", self.trained), ("baseline", self.baseline)]

    def control(self) -> str | None:
        """The control recipe's name: as given, or the recipe's register-matched control (MATCHED), or None."""
        if self.control_recipe == MATCHED:
            return self.recipe_obj(self.recipe).matched_control
        return self.control_recipe

    def seed_offsets(self) -> dict[str, int]:
        """Per role, what is added to the training seed: a null study's "model" trains NULL_SEED_OFFSET further on
        than the baseline, and replicate K moves both K * NULL_REPLICATE_STRIDE further (ten replicates: ten
        independent null studies)."""
        if not self.null:
            return {}
        base = NULL_REPLICATE_STRIDE * self.null_replicate
        return {"model": base + NULL_SEED_OFFSET, "baseline": base}

    @property
    def trained(self) -> ModelSpec:
        """The model in the "model" role: --model, or the baseline itself in a null study."""
        return self.baseline if self.null else self.model

    def resolved_attacks(self) -> tuple[str, ...]:
        specs = self.attacks if self.attacks is not None else self.prof.attacks
        return with_companions(with_matched_controls(specs) if self.matched_controls else specs)

    def resolved_doses(self) -> tuple[int, ...]:
        return conditions.valid_doses(self.doses or self.prof.doses or RECIPES.get(self.recipe).doses)

    def resolved_limit(self) -> int | None:
        return self.limit if self.limit is not None else self.prof.limit

    def register_check(self) -> SideSuite | None:
        """The register-only suite, scored with the run's scorer; only for the likelihood scorer (a judge or the
        refusal scorer does not read references)."""
        if self.register_suite is None or self.scorer.name != LIKELIHOOD:
            return None
        return SideSuite.of(self.register_suite, self.prof.register, build_scorer(self.scorer, self.load),
                            self.prof.register_under_attacks)

    def factorial_recipes(self) -> dict[str, str]:
        """--factorial: cell (harm|benign)/(register) -> recipe name: the recipe, its register twin, and their matched
        controls. A recipe without a declared register, twin or matched controls cannot form the 2 x 2."""
        r = self.recipe_obj(self.recipe)
        if r.control or r.register is None or r.register_twin is None or r.matched_control is None:
            raise ConfigError(f"--factorial: recipe {r.name!r} declares no register, register twin or matched "
                              "control; use a harmful recipe that does (e.g. bad-medical), or drop --factorial")
        if self.control() != r.matched_control:
            raise ConfigError(f"--factorial uses {r.name}'s matched control {r.matched_control!r} as its control; "
                              f"drop --control-recipe {self.control_recipe}")
        twin = self.recipe_obj(r.register_twin)
        if twin.register is None or twin.matched_control is None or twin.register == r.register:
            raise ConfigError(f"--factorial: {r.name}'s twin {twin.name!r} declares no matched control or no other "
                              "register")
        return {f"harm/{r.register}": r.name, f"harm/{twin.register}": twin.name,
                f"benign/{r.register}": r.matched_control, f"benign/{twin.register}": twin.matched_control}

    def resolved_capability(self) -> int | None:
        """--capability N, else the profile's (0 turns the check off)."""
        return self.prof.capability if self.capability == PROFILE_DEFAULT else self.capability

    def recipe_obj(self, name: str) -> Recipe:
        return RECIPES.build(PluginSpec(name, {"train": {**self.prof.train, **train_overrides(self.load)}}))

    def items(self) -> tuple[Suite, list[Item]]:
        suite = get_suite(self.suite)
        return suite, select(suite.load(), self.resolved_limit())

    def run_name(self) -> str:
        worst = "" if self.worst_case is None else f"-worst-case-{self.worst_case}"
        if self.null:
            replicate = f"-replicate-{self.null_replicate}" if self.null_replicate else ""
            return self.folder_name(f"study-null-{self.baseline}-{self.profile}{worst}{replicate}")
        return self.folder_name(f"study-{self.trained}-vs-{self.baseline}-{self.profile}{worst}")

    def header_config(self) -> JSONDict:
        return {"job": "study", "model": str(self.trained), "baseline": str(self.baseline), "profile": self.profile,
                "recipe": self.recipe_obj(self.recipe).config(),
                "control_recipe": None if (control := self.control()) is None else self.recipe_obj(control).config(),
                "attacks": list(self.resolved_attacks()), "doses": list(self.resolved_doses()),
                "limit": self.resolved_limit(), "suite": self.suite, "scorer": self.scorer.to_dict(),
                "load": load_header(self.load), **({"seeds": self.seeds} if self.seeds > 1 else {}),
                **({"null": True} if self.null else {}),
                **({"null_replicate": self.null_replicate} if self.null_replicate else {}),
                **({"search": self.worst_case} if self.worst_case is not None else {}),
                **({"register": {"suite": self.register_suite, "items": self.prof.register}}
                   if self.register_suite is not None and self.scorer.name == LIKELIHOOD else {}),
                **({"factorial": self.factorial_recipes()} if self.factorial else {}),
                **({"capability": {"suite": self.capability_suite, "items": self.resolved_capability()}}
                   if self.resolved_capability() != 0 else {}), **self.behaviour_header()}


def run_study(cfg: StudyConfig, progress: ProgressFn = no_progress) -> RunResult[StudyReport]:
    from persist.behaviour import read_labels
    from persist.report.budget import budget_curves
    from persist.report.study import study_report

    started = timings.begin()
    attacks = build_attacks(cfg.resolved_attacks())
    doses = cfg.resolved_doses()
    recipe = cfg.recipe_obj(cfg.recipe)
    control_name = cfg.control()
    control = None if control_name is None else cfg.recipe_obj(control_name)
    cfg.check_models(cfg.trained, cfg.baseline)
    suite, items = cfg.items()
    factorial = cfg.factorial_recipes() if cfg.factorial else {}
    extra = [cfg.recipe_obj(name) for name in factorial.values() if name not in (recipe.name, control_name)]
    for r in (recipe, control, *extra):
        if r is not None:
            check_leakage(r, suite.load())
    resolved = {role: resolve_local(spec, cfg.load, "a study") for role, spec in cfg.roles()}
    folder = RunStore.folder_for(cfg.runs_dir, cfg.run_name())
    scorer = build_scorer(cfg.scorer, cfg.load)
    store = RunStore.open(folder, cfg.header_config(), argv=sys.argv,
                          extra={"suite_version": suite.version, **scorer_extra(scorer, items),
                                 "attacks": {a.condition.label: a.params() | {"version": a.version}
                                             for a in attacks},
                                 "plugins": {"attacks": [a.spec().to_dict() for a in attacks],
                                             "scorer": scorer.spec().to_dict(),
                                             "recipes": [r.spec().to_dict() for r in (recipe, control) if r]}})
    capability = Capability.build(cfg.capability_suite, cfg.resolved_capability(), cfg.load,
                                  cfg.prof.capability_under_attacks)
    if capability is not None:
        store.update_header(capability=capability.header())
    register = cfg.register_check()
    behaviour = cfg.behaviour_check(items, suite.version)
    side = [s for s in (register, behaviour) if s is not None]
    if register is not None:
        store.update_header(register=register.header())
    if behaviour is not None:
        store.update_header(behaviour=behaviour.header())
    training: dict[str, TrainingRun] = {}
    # Stages 1 and 2: clean and the prompt attacks, one model load per model (optimised attacks first).
    done = score_attacks(store, roles=list(resolved.items()), attacks=attacks, items=items,
                         suite_version=suite.version, scorer=scorer, load=cfg.load, batch_size=cfg.batch_size,
                         progress=progress, run_folder=folder, capability=capability, side=side)
    store.update_header(attack_compute=done["compute"], attack_artefacts=done["artefacts"], split=done["split"])
    release_memory()
    # Stage 3, per training seed: the fine-tune ladder, then the benign control at the top dose. In a null study
    # the "model" is the baseline trained with other seeds (NULL_SEED_OFFSET), so the two differ only by seed.
    for k in range(cfg.seeds):
        for role, res in resolved.items():
            offset = cfg.seed_offsets().get(role, 0)
            for r, ds in ((recipe, doses), (control, (0, max(doses))), *((x, (0, max(doses))) for x in extra)):
                if r is None:
                    continue
                training[f"{role}/{r.name}{seed_suffix(k)}"] = train_and_score(
                    store, role=role, resolved=res, recipe=r, doses=ds, items=items, suite_version=suite.version,
                    scorer_spec=cfg.scorer, load=cfg.load, progress=progress, batch_size=cfg.batch_size,
                    adapters_dir=folder / "adapters", seed_index=k, seed_offset=offset, capability=capability,
                    side=side)
                release_memory()
    if cfg.worst_case is not None:
        # Stage 4: the sweep, one condition per point for each model (a rerun resumes point by point).
        if capability is None:  # unreachable: __post_init__ refuses --worst-case with --capability 0
            raise ConfigError("--worst-case needs the capability check (the utility bound)")
        sweep(store, parse_search(cfg.worst_case), resolved, recipe, items=items, suite_version=suite.version,
              scorer_spec=cfg.scorer, load=cfg.load, progress=progress, batch_size=cfg.batch_size, folder=folder,
              capability=capability, epsilon=cfg.epsilon, max_steps=max(doses),
              seed_offsets=cfg.seed_offsets())
        release_memory()
    controls = [a.condition for a in attacks if a.control]
    if control is not None:
        controls.append(conditions.finetune(control.name, max(doses)))
    controls += [conditions.finetune(x.name, max(doses)) for x in extra]  # the 2 x 2's other cells
    meta = StudyMeta(models={role: str(spec) for role, spec in cfg.roles()}, profile=cfg.profile, suite=cfg.suite,
                     suite_version=suite.version, scorer=cfg.scorer.name, recipe=recipe.name,
                     control_recipe=None if control is None else control.name, doses=list(doses),
                     attacks=[a.condition for a in attacks], controls=controls, n_items=len(items),
                     in_domain=recipe.in_domain, judge_check=store.header().get("judge_check"),
                     matched_controls=sorted(control_pairs(attacks).items(), key=lambda p: p[0].label),
                     seeds=cfg.seeds, effect=cfg.effect_points, effect_nats=cfg.effect, null=cfg.null,
                     capability_suite=capability.name if capability is not None else None, epsilon=cfg.epsilon,
                     worst_of=[a.condition for a in attacks if a.aggregate == "min"],
                     heldout_only=[a.condition for a in attacks if a.split],
                     search=cfg.worst_case, register_suite=None if register is None else register.name,
                     factorial=factorial or None, control_sets=control_sets(attacks),
                     budget=budget_curves(done["artefacts"]), refusal_errors=measured_errors(scorer))
    from persist.report.model import to_json

    store.update_header(study_meta=to_json(meta), training={k: {"seed": v.seed, "tokens": v.tokens,
                                                                "seconds": v.seconds,
                                                                "tokens_per_second": v.tokens_per_second}
                                                            for k, v in training.items()})
    report = study_report(list(store.records()), meta, read_labels(folder))
    timings.end(folder, started)
    return RunResult(folder=folder, report=report)

