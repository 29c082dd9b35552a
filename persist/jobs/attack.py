"""The prompt-attack campaign: for each model, clean + every attack on the same items -> records -> comparison.

Attacks are reached only through the ATTACKS registry, by spec strings such as
    persona-bad-medical      many-shot:k=16      encoding:scheme=base64      dan:templates=STAN|DUDE
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, TypedDict

from persist import timings
from persist.api import Attack, JSONDict, PreparedAttack, Scorer
from persist.behaviour import Behaviour, split_behaviour
from persist.conditions import CLEAN, Condition
from persist.errors import ConfigError
from persist.jobs.options import ProgressFn, RunOptions, RunResult, no_progress, require_specs, scorer_extra
from persist.models import ModelSpec, ResolvedModel
from persist.registry import ATTACKS, PluginSpec
from persist.report.refusal import errors_from_config
from persist.report.run import RunReport, Split
from persist.runner import LazyTarget, clean_variant, run_units
from persist.schema import Item
from persist.scoring import build_scorer, measured_errors
from persist.store import RunStore
from persist.targets.base import Target
from persist.timings import log_time

if TYPE_CHECKING:
    from persist.capability import Capability, SideSuite
    from persist.models import LoadOptions

DEFAULT_ATTACKS = ("persona-bad-medical", "persona-disallowed-mental-health", "persona-helpful-medical",
                   "evil-persona", "refusal-suppression", "prefill", "roleplay", "dan", "many-shot", "encoding",
                   "reformulation", "sycophancy", "escalation")
# Optimised and white-box attacks (persist.prepared): minutes to hours on a CPU, so off the quick profile and the
# attack command's defaults; the full study profile runs them (a GPU's job at 7B+).
OPTIMISED_ATTACKS = ("gcg-suffix", "gcg-suffix:source=other", "steering", "best-of-n", "pair")


def with_matched_controls(specs: Sequence[str]) -> tuple[str, ...]:
    """The specs plus a length-matched neutral control (`matched-context`) for every attack that only adds
    context (its class says `adds_context`) and is not itself a control."""
    out = [s.strip() for s in specs]
    for s in list(out):
        cls = ATTACKS.get(PluginSpec.parse(s, "attack").name)
        control = "matched-context:of=" + s.replace(":", "/")
        if cls.adds_context and not cls.control and control not in out:
            out.append(control)
    return tuple(out)


def with_companions(specs: Sequence[str]) -> tuple[str, ...]:
    """The specs plus the controls each attack is always run with (its `companions()`, e.g. best-of-n's)."""
    out = [s.strip() for s in specs]
    for s in list(out):
        for companion in ATTACKS.build(PluginSpec.parse(s, "attack")).companions():
            if companion not in out:
                out.append(companion)
    return tuple(out)


def control_pairs(attacks: Sequence[Attack]) -> dict[Condition, Condition]:
    """attack condition -> the condition of its own matched control, for the attacks whose control is present."""
    return {a.control_for: a.condition for a in attacks if a.control_for is not None and a.control_kind == "matched"}


def control_sets(attacks: Sequence[Attack]) -> list[tuple[Condition, Condition, str]]:
    """(attack, control, kind) for the controls that are not a single matched control (steering's random,
    reversed and register directions: persist.report.controls)."""
    return [(a.control_for, a.condition, a.control_kind) for a in attacks
            if a.control_for is not None and a.control_kind != "matched"]


def build_attacks(specs: Sequence[str | PluginSpec]) -> list[Attack]:
    """Attack instances from spec strings; every spec is checked before any is used."""
    if not specs:
        raise ConfigError("--attacks is empty; name at least one attack (see `persist attacks list`)")
    return [ATTACKS.build(PluginSpec.parse(s, "attack") if isinstance(s, str) else s) for s in specs]


@dataclass(frozen=True)
class AttackConfig(RunOptions):
    model: ModelSpec
    baseline: ModelSpec | None = None
    attacks: tuple[str, ...] = DEFAULT_ATTACKS
    matched_controls: bool = False  # add a length-matched neutral control for each attack that adds context

    def __post_init__(self) -> None:
        super().__post_init__()
        require_specs(model=self.model, baseline=self.baseline)
        if self.matched_controls:
            object.__setattr__(self, "attacks", with_matched_controls(self.attacks))
        object.__setattr__(self, "attacks", with_companions(self.attacks))

    def roles(self) -> list[tuple[str, ModelSpec]]:
        return [("model", self.model)] + ([("baseline", self.baseline)] if self.baseline else [])

    def run_name(self) -> str:
        return self.folder_name(f"attack-{self.model}" + (f"-vs-{self.baseline}" if self.baseline else ""))

    def header_config(self) -> JSONDict:
        return {"job": "attack", "model": str(self.model),
                "baseline": None if self.baseline is None else str(self.baseline), "attacks": list(self.attacks),
                **self.header_common()}


class AttackStages(TypedDict):
    """What score_attacks returns: the targets' descriptions, each prepared attack's compute and artefact (per
    condition, then model) and the train/held-out item ids of a split."""

    models: dict[str, JSONDict]
    compute: dict[str, dict[str, dict[str, float]]]
    artefacts: dict[str, dict[str, JSONDict]]
    split: dict[str, list[str]] | None


def score_attacks(store: RunStore, *, roles: Sequence[tuple[str, ModelSpec | ResolvedModel | Target]],
                  attacks: list[Attack], items: list[Item], suite_version: str, scorer: Scorer, load: LoadOptions,
                  batch_size: int, progress: ProgressFn, run_folder: Path,
                  capability: Capability | None = None, side: Sequence[SideSuite] = ()) -> AttackStages:
    """Clean and every attack, for each model, on the same items. Attacks that need the model (optimised,
    white-box: persist.prepared) are prepared against each model first and evaluated on the held-out half of the
    items. Returns {"models": target descriptions, "compute": per condition and model, "split": item ids}.
    `side`: suites scored beside the items under every condition (a study's register-only suite)."""
    from persist.prepared import PrepareContext, artefact_folder, needs_model, split_items
    from persist.targets import open_target

    split = any(a.split for a in attacks)
    train, heldout = split_items(items) if split else (items, items)
    names = [r for r, _ in roles]
    other = {r: next((o for o in names if o != r), None) for r in names}
    def opener(spec: ModelSpec | ResolvedModel | Target) -> Callable[[], Target]:
        # a role comes as a model spec or resolved weights to open, or with its model already loaded
        return lambda: open_target(spec, load) if isinstance(spec, (ModelSpec, ResolvedModel)) else spec

    targets = {role: LazyTarget(opener(spec)) for role, spec in roles}
    prepared: dict[tuple[str, Condition], PreparedAttack] = {}
    compute: dict[str, dict[str, dict[str, float]]] = {}
    artefacts: dict[str, dict[str, JSONDict]] = {}

    def prepare(role: str, a: Attack) -> None:
        o = other[role]
        ctx = PrepareContext(role=role, other_role=o, target=targets[role], train=train, heldout=heldout,
                             items=heldout if a.split else items,
                             folder=artefact_folder(run_folder, a, role),
                             other=artefact_folder(run_folder, a, o) if o else None, scorer=scorer, load=load)
        t0 = perf_counter()
        prepared[(role, a.condition)] = a.prepare(ctx)
        log_time(store.folder, "prepare", perf_counter() - t0, role=role, condition=a.condition.label)
        # wall seconds stay in the attack's own artefact (RUN/attacks/...): the report keeps only what is
        # deterministic, so a resumed run writes the same bytes as an uninterrupted one
        compute.setdefault(a.condition.label, {})[role] = {k: v for k, v in prepared[(role, a.condition)].compute.items()
                                                           if k != "seconds"}
        described = prepared[(role, a.condition)].describe()  # the suffix found, the steering layer, ...
        if described is not None:
            artefacts.setdefault(a.condition.label, {})[role] = described

    for role in names:  # optimise against each model while it is loaded; then the transfer variants
        for a in attacks:
            if needs_model(a):
                prepare(role, a)
    for role in names:
        for a in attacks:
            if a.prepared and not needs_model(a):
                prepare(role, a)
    described: dict[str, JSONDict] = {}
    for role in names:
        target = targets[role]
        runs: list[tuple[Condition, Attack | None]] = [(CLEAN, None), *((a.condition, a) for a in attacks)]
        for cond, attack in runs:
            # the attack, or what was prepared of it against this model; None: clean
            p = None if attack is None else prepared.get((role, cond), attack)
            evaluated = heldout if attack is not None and attack.split else items
            units = [clean_variant(i) for i in items] if p is None else [v for i in evaluated for v in p.transform(i)]
            live = p.wrap(target) if isinstance(p, PreparedAttack) else target
            run_units(store, role=role, target=live, scorer=scorer, units=units, condition=cond,
                      suite_version=suite_version, batch_size=batch_size,
                      on_progress=progress(f"{role}: {cond} ({len(units)} units)", len(units)))
            for check in (*side, *([capability] if capability is not None else [])):
                # the behaviour step answers only the held-out items under an attack prepared on the train half
                only = ({"only": {i.id for i in heldout}}
                        if isinstance(check, Behaviour) and attack is not None and attack.split else {})
                check.run(store, role=role, target=live, condition=cond, attack=p, batch_size=batch_size,
                          progress=progress, **only)
        if target.target is not None:
            described[role] = target.target.describe()
        del target
        targets.pop(role)
    return {"models": described, "compute": compute, "artefacts": artefacts,
            "split": {"train": [i.id for i in train], "heldout": [i.id for i in heldout]} if split else None}


def run_attack(cfg: AttackConfig, progress: ProgressFn = no_progress) -> RunResult[RunReport]:
    """Run the campaign (resuming a matching run folder) and return the comparison report."""
    from persist.behaviour import read_labels
    from persist.capability import split_records
    from persist.report.behaviour import behaviour_rows
    from persist.report.budget import budget_curves
    from persist.report.capability import capability_rows
    from persist.report.compare import compare
    from persist.report.controls import controlled_attacks
    from persist.report.strength import strength_rows
    from persist.targets import open_target

    started = timings.begin()
    attacks = build_attacks(cfg.attacks)
    cfg.check_models(*(s for _, s in cfg.roles()))
    suite, items = cfg.items()
    capability = cfg.capability_check(*(s for _, s in cfg.roles()))
    behaviour = cfg.behaviour_check(items, suite.version)
    folder = RunStore.folder_for(cfg.runs_dir, cfg.run_name())
    scorer = build_scorer(cfg.scorer, cfg.load)
    first = open_target(cfg.model, cfg.load)  # a model that cannot load leaves no run folder
    store = RunStore.open(folder, cfg.header_config(), argv=sys.argv,
                          extra={"suite_version": suite.version, **scorer_extra(scorer, items),
                                 "attacks": {a.condition.label: a.params() | {"version": a.version}
                                             for a in attacks},
                                 "plugins": {"attacks": [a.spec().to_dict() for a in attacks],
                                             "scorer": scorer.spec().to_dict()}})
    roles = [(role, first if role == "model" else spec) for role, spec in cfg.roles()]
    done = score_attacks(store, roles=roles, attacks=attacks, items=items, suite_version=suite.version,
                         scorer=scorer, load=cfg.load, batch_size=cfg.batch_size, progress=progress,
                         run_folder=folder, capability=capability, side=[behaviour] if behaviour else [])
    store.update_header(models=done["models"] or store.header().get("models"), attack_compute=done["compute"],
                        attack_artefacts=done["artefacts"], split=done["split"],
                        **({"capability": capability.header()} if capability else {}),
                        **({"behaviour": behaviour.header()} if behaviour else {}))
    records, behaviour_records = split_behaviour(list(store.records()))
    records, cap_records = split_records(records, None if capability is None else capability.name)
    worst_of = [a.condition for a in attacks if a.aggregate == "min"]
    comparison = compare(records, controls=[a.condition for a in attacks if a.control],
                         in_domain={a.condition: a.in_domain for a in attacks}, control_of=control_pairs(attacks),
                         worst_of=worst_of, effect=cfg.effects(),
                         refusal_errors=errors_from_config({"errors": measured_errors(scorer)}))
    split = None if done["split"] is None else Split(train=done["split"]["train"], heldout=done["split"]["heldout"])
    strength = strength_rows(records, done["compute"], None if split is None else split.heldout, worst_of=worst_of,
                             controls=[a.condition for a in attacks if a.control], control_of=control_pairs(attacks))
    report = RunReport(kind="attack", comparison=comparison, suite=cfg.suite, suite_version=suite.version,
                       scorer=cfg.scorer.name, n_items=len(items),
                       models={role: str(spec) for role, spec in cfg.roles()},
                       capability=capability_rows(cap_records, cfg.epsilon),
                       compute=done["compute"], split=split, artefacts=done["artefacts"] or None,
                       strength=strength if any(done["compute"].values()) else None,
                       controlled=controlled_attacks(records, [r for r, _ in cfg.roles()], control_sets(attacks),
                                                     worst_of) or None,
                       behaviour=behaviour_rows(behaviour_records, read_labels(folder), comparison.rows),
                       budget=budget_curves(done["artefacts"]))
    timings.end(folder, started)
    return RunResult(folder=folder, report=report)
