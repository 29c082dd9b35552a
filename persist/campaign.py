"""The prompt-attack campaign: for each model, clean + every attack on the same items -> records -> comparison.

Attacks are reached only through the ATTACKS registry, by spec strings such as
    persona-bad-medical      many-shot:k=16      encoding:scheme=base64      dan:templates=STAN|DUDE
"""

from __future__ import annotations

import sys
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

from persist.errors import ConfigError
from persist.jobs import ProgressFn, RunOptions, build_scorer, get_suite, no_progress, scorer_extra
from persist.registry import ATTACKS
from persist.runner import CLEAN, clean_variant, run_units
from persist.store import RunStore

DEFAULT_ATTACKS = ("persona-bad-medical", "persona-disallowed-mental-health", "persona-helpful-medical",
                   "evil-persona", "refusal-suppression", "prefill", "roleplay", "dan", "many-shot", "encoding",
                   "reformulation", "sycophancy", "escalation")


def parse_attack_spec(spec: str) -> tuple[str, dict[str, str]]:
    """'many-shot:k=16:x=y' -> ('many-shot', {'k': '16', 'x': 'y'})."""
    name, *rest = spec.strip().split(":")
    params = {}
    for part in rest:
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise ConfigError(f"attack spec {spec!r}: parameters are written name:key=value")
        params[key] = value
    return name, params


def build_attack(spec: str) -> Any:
    """An attack instance from a spec string, with its string params converted to the field types."""
    name, raw = parse_attack_spec(spec)
    cls = ATTACKS.get(name)
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"attack {name!r} has no parameter {key!r}; it takes: {', '.join(known) or 'none'}")
        default = known[key].default if known[key].default is not MISSING else ""
        try:
            if isinstance(default, bool):
                kwargs[key] = value.lower() in ("1", "true", "yes")
            elif isinstance(default, int):
                kwargs[key] = int(value)
            elif isinstance(default, tuple):
                kwargs[key] = tuple(v for v in value.split("|") if v)
            else:
                kwargs[key] = value
        except ValueError:
            raise ConfigError(f"attack {name!r}: {key}={value!r} is not a whole number") from None
    return cls(**kwargs)


def condition_name(attack: Any) -> str:
    """'attack:NAME' plus any non-default params, so two settings of one attack never share a label."""
    defaults = type(attack)()
    changed = [f"{k}={v if not isinstance(v, tuple) else '|'.join(v)}"
               for k, v in attack.params().items() if getattr(defaults, k) != v]
    return "attack:" + ":".join([attack.name, *changed])


@dataclass(frozen=True)
class AttackConfig(RunOptions):
    model: str
    baseline: str | None = None
    attacks: tuple[str, ...] = DEFAULT_ATTACKS

    def run_name(self) -> str:
        return self.folder_name(f"attack-{self.model}" + (f"-vs-{self.baseline}" if self.baseline else ""))

    def header_config(self) -> dict[str, Any]:
        return {"job": "attack", "model": self.model, "baseline": self.baseline, "attacks": list(self.attacks),
                "suite": self.suite, "scorer": asdict(self.scorer), "limit": self.limit, "load": asdict(self.load)}


def run_attack(cfg: AttackConfig, progress: ProgressFn = no_progress) -> dict[str, Any]:
    """Run the campaign (resuming a matching run folder) and return the comparison report."""
    from persist.report.compare import compare
    from persist.targets import open_target
    from probes.suites import select

    if not cfg.attacks:
        raise ConfigError("--attacks is empty; name at least one attack (see `persist attacks list`)")
    attacks = [build_attack(s) for s in cfg.attacks]  # all specs checked before anything runs
    suite = get_suite(cfg.suite)
    items = select(suite.load(), cfg.limit)
    units_by_condition = {CLEAN: [clean_variant(i) for i in items]}
    for attack in attacks:
        units_by_condition[condition_name(attack)] = [v for i in items for v in attack.transform(i)]
    folder = RunStore.folder_for(cfg.runs_dir, cfg.run_name())
    roles = [("model", cfg.model)] + ([("baseline", cfg.baseline)] if cfg.baseline else [])
    store = None
    described: dict[str, Any] = {}
    for role, spec in roles:
        target = open_target(spec, cfg.load)
        scorer = build_scorer(cfg.scorer, cfg.load)
        described[role] = target.describe()
        if store is None:
            store = RunStore.open(folder, cfg.header_config(), argv=sys.argv,
                                  extra={"suite_version": suite.version, **scorer_extra(scorer, items),
                                         "attacks": {condition_name(a): a.params() | {"version": a.version}
                                                     for a in attacks}})
        for condition, units in units_by_condition.items():
            advance = progress(f"{role}: {condition} ({len(units)} units)", len(units))
            run_units(store, role=role, target=target, scorer=scorer, units=units, condition=condition,
                      suite_version=suite.version, batch_size=cfg.batch_size, on_progress=advance)
        del target
    store.update_header(models=described)
    controls = [condition_name(a) for a in attacks if a.control]
    report = compare(list(store.records()), controls=controls)
    report.update(kind="attack", schema_version=1, suite=cfg.suite, suite_version=suite.version,
                  scorer=cfg.scorer.name, models={r: s for r, s in roles}, n_items=len(items))
    return {"folder": folder, "report": report}
