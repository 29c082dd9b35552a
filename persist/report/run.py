"""report.json of `persist attack`, `persist finetune-attack` and `persist finetune-attack --search`: the comparison
plus, per kind, typed facts of what was run (compute and split of prepared attacks, the strength table; the recipe,
doses, training runs and fluency of a fine-tune; the chosen worst case of a search). Fields a kind does not have
are None and absent from the JSON."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from persist.api import JSON, JSONDict  # noqa: F401  (JSON: resolves JSONDict's forward references for from_json)
from persist.report.jsonable import from_json, to_json
from persist.report.model import (
    SCHEMA_VERSION,
    BehaviourRow,
    BudgetCurve,
    CapabilityRow,
    Comparison,
    ControlledAttack,
    FluencyRow,
    check_version,
)
from persist.stats import Tested

OMIT = {"omit_none": True}

# compute of each prepared attack: condition -> model role -> {"forward_tokens": ..., "backward_tokens": ...}
Compute = dict[str, dict[str, dict[str, float]]]


@dataclass(frozen=True)
class Split:
    """The item ids an optimised attack was prepared on (train) and reported on (held-out)."""

    train: list[str]
    heldout: list[str]


@dataclass(frozen=True)
class StrengthRow:
    """One (model, attack) of the strength-per-compute table (persist.report.strength)."""

    role: str
    condition: str
    n: int
    shift: Tested
    forward_tokens: float
    backward_tokens: float
    variants_per_item: float
    nats_per_million_prepared: float | None
    net_of: str | None = field(default=None, metadata=OMIT)  # the matched control the shift is taken against


@dataclass(frozen=True)
class TrainingRun:
    """One fine-tune of one model with one seed: what it cost and where its checkpoints are."""

    seed: int
    losses: list[float]
    tokens: int
    seconds: float
    tokens_per_second: float | None
    checkpoints: dict[str, str]  # dose (steps) -> adapter folder


@dataclass(frozen=True)
class ChosenPoint:
    """A search's worst case for one model: the point and what it did."""

    condition: str
    learning_rate: float
    rank: int
    steps: int
    strength: float
    capability_loss: float | None


@dataclass(frozen=True)
class SearchSummary:
    plan: str
    epsilon: float
    worst_case: dict[str, ChosenPoint | None]


@dataclass(frozen=True)
class RunReport:
    """report.json of an attack campaign, a fine-tune attack or a search."""

    kind: str  # attack | finetune | search
    comparison: Comparison
    suite: str
    suite_version: str
    scorer: str
    n_items: int
    models: dict[str, str]
    # attack
    compute: Compute | None = field(default=None, metadata=OMIT)
    split: Split | None = field(default=None, metadata=OMIT)
    artefacts: dict[str, dict[str, JSONDict]] | None = field(default=None, metadata=OMIT)  # each attack's describe()
    strength: list[StrengthRow] | None = field(default=None, metadata=OMIT)
    controlled: list[ControlledAttack] | None = field(default=None, metadata=OMIT)  # steering and its controls
    # finetune
    recipe: JSONDict | None = field(default=None, metadata=OMIT)  # the recipe's config()
    doses: list[int] | None = field(default=None, metadata=OMIT)
    training: dict[str, TrainingRun] | None = field(default=None, metadata=OMIT)
    fluency: dict[str, dict[str, FluencyRow]] | None = field(default=None, metadata=OMIT)
    # search
    search: SearchSummary | None = field(default=None, metadata=OMIT)
    capability: list[CapabilityRow] = field(default_factory=list)
    behaviour: list[BehaviourRow] = field(default_factory=list, metadata={"omit_default": []})
    budget: list[BudgetCurve] = field(default_factory=list, metadata={"omit_default": []})  # optimised attacks
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        own = to_json(self)
        out = {**to_json(self.comparison), **{k: v for k, v in own.items() if k not in _HEAD and k != "comparison"}}
        out.update({k: own[k] for k in _HEAD})
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunReport:
        check_version(d)
        comp_keys = {f.name for f in dataclasses.fields(Comparison)}
        rest = {k: v for k, v in d.items() if k not in comp_keys}
        return from_json(cls, rest | {"comparison": {k: d[k] for k in comp_keys if k in d}})  # type: ignore[no-any-return]


_HEAD = ("kind", "schema_version", "suite", "suite_version", "scorer", "n_items", "models")
