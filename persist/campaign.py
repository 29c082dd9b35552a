"""The prompt-attack campaign: for each model, clean + every attack on the same items -> records -> comparison.

Attacks are reached only through the ATTACKS registry, by spec strings such as
    persona-bad-medical      many-shot:k=16      encoding:scheme=base64      dan:templates=STAN|DUDE
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from persist.conditions import CLEAN, Condition
from persist.errors import ConfigError
from persist.jobs import ProgressFn, RunOptions, build_scorer, no_progress, parse_specs, scorer_extra
from persist.models import ModelSpec
from persist.registry import ATTACKS, PluginSpec
from persist.runner import clean_variant, run_units
from persist.store import RunStore

DEFAULT_ATTACKS = ("persona-bad-medical", "persona-disallowed-mental-health", "persona-helpful-medical",
                   "evil-persona", "refusal-suppression", "prefill", "roleplay", "dan", "many-shot", "encoding",
                   "reformulation", "sycophancy", "escalation")


def with_matched_controls(specs: Sequence[str]) -> tuple[str, ...]:
    """The specs plus a length-matched neutral control (`matched-context`) for every attack that only adds
    context (its class says `adds_context`) and is not itself a control."""
    out = [s.strip() for s in specs]
    for s in list(out):
        cls = ATTACKS.get(PluginSpec.parse(s, "attack").name)
        control = "matched-context:of=" + s.replace(":", "/")
        if getattr(cls, "adds_context", False) and not getattr(cls, "control", False) and control not in out:
            out.append(control)
    return tuple(out)


def control_pairs(attacks: Sequence[Any]) -> dict[Condition, Condition]:
    """attack condition -> the condition of its own matched control, for the attacks whose control is present."""
    return {a.control_for: a.condition for a in attacks if a.control_for is not None}


def build_attacks(specs: Sequence[str | PluginSpec]) -> list[Any]:
    """Attack instances from spec strings; every spec is checked before any is used."""
    if not specs:
        raise ConfigError("--attacks is empty; name at least one attack (see `persist attacks list`)")
    return [ATTACKS.build(PluginSpec.parse(s, "attack") if isinstance(s, str) else s) for s in specs]


@dataclass(frozen=True)
class AttackConfig(RunOptions):
    model: ModelSpec | str
    baseline: ModelSpec | str | None = None
    attacks: tuple[str, ...] = DEFAULT_ATTACKS
    matched_controls: bool = False  # add a length-matched neutral control for each attack that adds context

    def __post_init__(self) -> None:
        super().__post_init__()
        parse_specs(self, "model", "baseline")
        if self.matched_controls:
            object.__setattr__(self, "attacks", with_matched_controls(self.attacks))

    def roles(self) -> list[tuple[str, ModelSpec]]:
        return [("model", self.model)] + ([("baseline", self.baseline)] if self.baseline else [])  # type: ignore[list-item]

    def run_name(self) -> str:
        return self.folder_name(f"attack-{self.model}" + (f"-vs-{self.baseline}" if self.baseline else ""))

    def header_config(self) -> dict[str, Any]:
        return {"job": "attack", "model": str(self.model), "baseline": self.baseline and str(self.baseline),
                "attacks": list(self.attacks), **self.header_common()}


def run_attack(cfg: AttackConfig, progress: ProgressFn = no_progress) -> dict[str, Any]:
    """Run the campaign (resuming a matching run folder) and return the comparison report."""
    from persist.report.compare import compare
    from persist.report.model import RunReport
    from persist.targets import open_target

    attacks = build_attacks(cfg.attacks)
    cfg.check_models(*(s for _, s in cfg.roles()))
    suite, items = cfg.items()
    units_by_condition = {CLEAN: [clean_variant(i) for i in items]}
    for attack in attacks:
        units_by_condition[attack.condition] = [v for i in items for v in attack.transform(i)]
    folder = RunStore.folder_for(cfg.runs_dir, cfg.run_name())
    store = None
    described: dict[str, Any] = {}
    scorer = build_scorer(cfg.scorer, cfg.load)
    for role, spec in cfg.roles():
        target = open_target(spec, cfg.load)
        described[role] = target.describe()
        if store is None:  # after the first model loads: a model that cannot load leaves no run folder
            store = RunStore.open(folder, cfg.header_config(), argv=sys.argv,
                                  extra={"suite_version": suite.version, **scorer_extra(scorer, items),
                                         "attacks": {a.condition.label: a.params() | {"version": a.version}
                                                     for a in attacks},
                                         "plugins": {"attacks": [a.spec().to_dict() for a in attacks],
                                                     "scorer": scorer.spec().to_dict()}})
        for condition, units in units_by_condition.items():
            advance = progress(f"{role}: {condition} ({len(units)} units)", len(units))
            run_units(store, role=role, target=target, scorer=scorer, units=units, condition=condition,
                      suite_version=suite.version, batch_size=cfg.batch_size, on_progress=advance)
        del target
    store.update_header(models=described)
    comparison = compare(list(store.records()), controls=[a.condition for a in attacks if a.control],
                         in_domain={a.condition: a.in_domain for a in attacks}, control_of=control_pairs(attacks),
                         effect=cfg.effect)
    report = RunReport(kind="attack", comparison=comparison, suite=cfg.suite, suite_version=suite.version,
                       scorer=cfg.scorer.name, n_items=len(items),
                       models={role: str(spec) for role, spec in cfg.roles()})
    return {"folder": folder, "report": report}
