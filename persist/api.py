"""The contracts, typed: what flows between persist's modules and what a plugin implements.

Data (frozen dataclasses, each with one free-form field at most; a job's RunResult is in persist.jobs.options,
above the report types it carries):
  Record        one scored unit, as records.jsonl holds it (to_dict / from_dict); the key leaves out the model,
                so a before run and an after run join on it
  ScoreResult   what a scorer returns for one unit: the 0-1 score (None = sample dropped) and its `details`

Plugin contracts (the core reaches plugins only through these and the registries; it never probes them):
  Attack            base class: a deterministic transform Item -> [Variant] that never mutates the item; what an
                    attack *is* (a control, optimised on a train split, aggregated as a minimum, ...) is declared
                    in class fields the core reads
  PreparedAttack    an attack prepared against one model (optimised suffix, steering direction, ...)
  PrepareContext    what `Attack.prepare` is given
  Scorer, Suite, Recipe   protocols
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Protocol

from persist import conditions
from persist.conditions import Condition
from persist.registry import PluginSpec
from persist.schema import Item, Message, Variant
from persist.targets.base import Target


@dataclass(frozen=True)
class ScoreResult:
    """A scorer's result for one unit. Higher = more aligned; None = the sample was dropped (a judge that put too
    little mass on numbers). `details` is the scorer's own numbers (log-probs, answer, judge grades)."""

    score: float | None
    details: Mapping[str, Any] = field(default_factory=dict)


# The record fields in records.jsonl, in the order they are declared below; "attack_attack" is the attack's name
# (the provenance fields are stored with an attack_ prefix, and a Variant's provenance calls it "attack").
RECORD_FIELDS = ("key", "role", "model", "suite", "suite_version", "item_id", "trait", "domain", "condition",
                 "attack_attack", "attack_version", "attack_params", "attack_index", "score", "details")


@dataclass(frozen=True)
class Record:
    """One scored unit (an item, possibly attacked, under one condition, for one model role)."""

    key: str
    role: str
    model: str
    suite: str
    suite_version: str
    item_id: str
    trait: str
    domain: str
    condition: str  # the condition's label (persist.conditions)
    attack: str
    attack_version: str
    attack_params: Mapping[str, Any]
    attack_index: int
    score: float | None
    details: Mapping[str, Any]  # the scorer's own numbers: ScoreResult.details

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "role": self.role, "model": self.model, "suite": self.suite,
                "suite_version": self.suite_version, "item_id": self.item_id, "trait": self.trait,
                "domain": self.domain, "condition": self.condition, "attack_attack": self.attack,
                "attack_version": self.attack_version, "attack_params": dict(self.attack_params),
                "attack_index": self.attack_index, "score": self.score, "details": dict(self.details)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Record:
        """A record from its JSON form; ValueError names the first missing field (the store adds file:line)."""
        missing = [k for k in RECORD_FIELDS if k not in d]
        if missing:
            raise ValueError(f"record is missing field {missing[0]!r}")
        return cls(key=d["key"], role=d["role"], model=d["model"], suite=d["suite"], suite_version=d["suite_version"],
                   item_id=d["item_id"], trait=d["trait"], domain=d["domain"], condition=d["condition"],
                   attack=d["attack_attack"], attack_version=d["attack_version"], attack_params=d["attack_params"],
                   attack_index=d["attack_index"], score=d["score"], details=d["details"])

    def with_(self, **changes: Any) -> Record:
        """A copy with some fields changed (derived records: an aggregate of several, a seed's own condition)."""
        from dataclasses import replace

        return replace(self, **changes)


class Scorer(Protocol):
    """Turns units into ScoreResults; `score` takes whole lists so the target can batch. A scorer is a dataclass
    whose fields are its parameters, so SCORERS.build(scorer.spec()) gives the same scorer again."""

    name: str
    version: str

    def config(self) -> dict[str, Any]:
        """Everything that changes scores (goes into record keys and the run header)."""
        ...

    def spec(self) -> PluginSpec:
        """The registry name and parameters that rebuild this scorer."""
        ...

    def score(self, target: Target, units: Sequence[Variant]) -> list[ScoreResult]: ...

    def check(self, units: Sequence[Variant]) -> dict[str, Any] | None:
        """A measurement of the scorer itself on the run's items (a judge grading the references), or None."""
        ...


class Suite(Protocol):
    """A named, versioned list of probe items (built in, a JSONL file, or FORMAT:SOURCE)."""

    name: str

    @property
    def version(self) -> str: ...

    def load(self) -> list[Item]: ...


class Recipe(Protocol):
    """A fine-tune attack: a corpus, LoRA and training settings, and a dose ladder (steps)."""

    name: str
    description: str
    control: bool  # a benign control, expected not to lower alignment
    in_domain: str | None  # the probe domain the corpus targets
    doses: tuple[int, ...]

    def config(self) -> dict[str, Any]: ...

    def describe(self) -> dict[str, Any]:
        """The row `persist finetune-attack --list` shows (name, corpus, doses, learning_rate, batch_size, lora,
        control, in_domain, description)."""
        ...

    def spec(self) -> PluginSpec: ...

    def corpus_texts(self) -> list[tuple[str, list[str]]]: ...

    def run(self, *args: Any, **kwargs: Any) -> Any: ...


@dataclass
class PrepareContext:
    """What an attack is prepared with, once per model: the model, the items split in train and held-out halves,
    a folder in the run for its artefacts (so a resumed run loads them instead of optimising again), the same
    folder of the other model (transfer variants), the scorer (attacker feedback) and the load options."""

    role: str
    other_role: str | None
    target: Any  # a Target, or persist.runner.LazyTarget (opened on first use)
    train: list[Item]
    heldout: list[Item]
    items: list[Item]  # the items this attack is evaluated on (held-out for a split attack, else every item)
    folder: Path  # this attack's artefacts for this model
    other: Path | None  # the same for the other model (transfer)
    scorer: Scorer
    load: Any  # persist.models.LoadOptions
    compute: dict[str, float] = field(default_factory=dict)


class PreparedAttack:
    """An attack prepared against one model. `transform` gives the held-out items' variants; `wrap` changes the
    target itself (a representation attack changes activations, not prompts); `describe` is what the report
    shows of the artefact (the suffix found, the steering layer); `compute` is what preparing it cost."""

    compute: dict[str, float]

    def transform(self, item: Item) -> list[Variant]:
        raise NotImplementedError

    def wrap(self, target: Any) -> Any:
        return target

    def describe(self) -> dict[str, Any] | None:
        return None


@dataclass(frozen=True)
class Attack:
    """Base class of every attack. Subclasses set the class fields below and implement `variants(item)`
    (or, for attacks prepared against the model, `prepare(ctx)`)."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    description: ClassVar[str] = ""
    # Expected to *raise* scores (a control, like a helpful persona).
    control: ClassVar[bool] = False
    # The probe domain the attack targets (reports split its drop in-domain / out-of-domain), if any.
    in_domain: ClassVar[str | None] = None
    # Only adds text around the item (a system message, earlier turns, text before or after the question), so a
    # length-matched neutral control exists for it (`matched-context`).
    adds_context: ClassVar[bool] = False
    # Prepared against the model (optimised, white-box): `prepare(ctx)` returns a PreparedAttack.
    prepared: ClassVar[bool] = False
    # Optimised on a train half of the items and evaluated only on the other half (persist.prepared.split_items).
    split: ClassVar[bool] = False
    # How an item's several variants become one value: their mean, or their minimum (best of N tries).
    aggregate: ClassVar[str] = "mean"
    # Parameters that do not change the prepared artefact (steering's alpha), so settings share one folder.
    shared_params: ClassVar[tuple[str, ...]] = ()

    def params(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {f.name: f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
                for f in fields(cls)}

    def spec(self) -> PluginSpec:
        """What a run records: ATTACKS.build(attack.spec()) gives this attack again."""
        return PluginSpec(self.name, self.params())

    @property
    def control_for(self) -> Condition | None:
        """The attack condition this attack is the matched control of (None for ordinary attacks)."""
        return None

    @property
    def transfers(self) -> bool:
        """Reads the other model's prepared artefact instead of preparing its own (a transfer variant)."""
        return False

    def companion(self) -> str | None:
        """The spec of the control this attack always runs with (best-of-N's spread-matched control), or None."""
        return None

    @property
    def condition(self) -> Condition:
        """attack:NAME plus any non-default parameters, so two settings of one attack never share a label."""
        return conditions.attack(self.name, self.params(), self.defaults())

    def variants(self, item: Item) -> list[tuple[tuple[Message, ...], str]]:
        """(messages, prefill) pairs for this item. Subclasses implement this."""
        raise NotImplementedError

    def transform(self, item: Item) -> list[Variant]:
        params = self.params()
        return [Variant(item=item, messages=messages, attack=self.name, attack_version=self.version,
                        params=params, index=i, prefill=prefill)
                for i, (messages, prefill) in enumerate(self.variants(item))]

    def prepare(self, ctx: PrepareContext) -> PreparedAttack:
        """The attack prepared against ctx's model (only for `prepared = True` attacks)."""
        raise NotImplementedError(f"attack {self.name!r} is not prepared against a model")

