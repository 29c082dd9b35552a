"""The contracts, typed: what flows between persist's modules and what a plugin implements.

Data (frozen dataclasses, each with one free-form field at most; a job's RunResult is in persist.jobs.options,
above the report types it carries):
  Record        one scored unit, as records.jsonl holds it (to_dict / from_dict); the key leaves out the model,
                so a before run and an after run join on it
  ScoreResult   what a scorer returns for one unit: the 0-1 score (None = sample dropped) and its `details`

JSON (a type alias): every free-form value here (details, attack parameters, a plugin's config) is what JSON holds,
so a consumer narrows it (isinstance, float()) before using it.

Plugin contracts (the core reaches plugins only through these and the registries; it never probes them):
  Attack            base class: a deterministic transform Item -> [Variant] that never mutates the item; what an
                    attack *is* (a control, optimised on a train split, aggregated as a minimum, ...) is declared
                    in class fields the core reads
  PreparedAttack    an attack prepared against one model (optimised suffix, steering direction, ...)
  PrepareContext    what `Attack.prepare` is given
  Scorer, Suite, Recipe   protocols (TrainResult: what Recipe.run returns; RecipeTraining: Recipe.train)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol, TypeAlias, cast

from persist import conditions
from persist.conditions import Condition
from persist.registry import PluginSpec
from persist.schema import Item, Message, Variant
from persist.targets.base import Target

if TYPE_CHECKING:
    from persist.models import LoadOptions
    from persist.runner import LazyTarget

# A value as JSON holds it (tuples stand for lists until they are written): the type of every free-form field
# here (a scorer's details, an attack's parameters, a plugin's config). A consumer narrows a value before using it
# (isinstance, or float() of a field it knows is a number).
JSON: TypeAlias = None | bool | int | float | str | Sequence["JSON"] | Mapping[str, "JSON"]
JSONDict = dict[str, JSON]


@dataclass(frozen=True)
class ScoreResult:
    """A scorer's result for one unit. Higher = more aligned; None = the sample was dropped (a judge that put too
    little mass on numbers). `details` is the scorer's own numbers (log-probs, answer, judge grades)."""

    score: float | None
    details: Mapping[str, JSON] = field(default_factory=dict)


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
    attack_params: Mapping[str, JSON]
    attack_index: int
    score: float | None
    details: Mapping[str, JSON]  # the scorer's own numbers: ScoreResult.details

    def to_dict(self) -> JSONDict:
        return {"key": self.key, "role": self.role, "model": self.model, "suite": self.suite,
                "suite_version": self.suite_version, "item_id": self.item_id, "trait": self.trait,
                "domain": self.domain, "condition": self.condition, "attack_attack": self.attack,
                "attack_version": self.attack_version, "attack_params": dict(self.attack_params),
                "attack_index": self.attack_index, "score": self.score, "details": dict(self.details)}

    @classmethod
    def from_dict(cls, d: Mapping[str, JSON]) -> Record:
        """A record from its JSON form; ValueError names the first missing field (the store adds file:line).
        The values are taken as they are (the casts only tell the type checker what records.jsonl holds)."""
        missing = [k for k in RECORD_FIELDS if k not in d]
        if missing:
            raise ValueError(f"record is missing field {missing[0]!r}")
        s = cast(Mapping[str, str], d)
        return cls(key=s["key"], role=s["role"], model=s["model"], suite=s["suite"], suite_version=s["suite_version"],
                   item_id=s["item_id"], trait=s["trait"], domain=s["domain"], condition=s["condition"],
                   attack=s["attack_attack"], attack_version=s["attack_version"],
                   attack_params=cast(Mapping[str, JSON], d["attack_params"]),
                   attack_index=cast(int, d["attack_index"]), score=cast("float | None", d["score"]),
                   details=cast(Mapping[str, JSON], d["details"]))


class Scorer(Protocol):
    """Turns units into ScoreResults; `score` takes whole lists so the target can batch. A scorer is a dataclass
    whose fields are its parameters, so SCORERS.build(scorer.spec()) gives the same scorer again."""

    name: str
    version: str

    def config(self) -> JSONDict:
        """Everything that changes scores (goes into record keys and the run header)."""
        ...

    def spec(self) -> PluginSpec:
        """The registry name and parameters that rebuild this scorer."""
        ...

    def score(self, target: Target, units: Sequence[Variant]) -> list[ScoreResult]: ...

    def check(self, units: Sequence[Variant]) -> JSONDict | None:
        """A measurement of the scorer itself on the run's items (a judge grading the references), or None."""
        ...


class Suite(Protocol):
    """A named, versioned list of probe items (built in, a JSONL file, or FORMAT:SOURCE)."""

    name: str

    @property
    def version(self) -> str: ...

    def load(self) -> list[Item]: ...


class TrainResult(Protocol):
    """What `Recipe.run` returns: an adapter folder per dose, the training losses and what training cost."""

    @property
    def checkpoints(self) -> Mapping[int, Path]: ...

    @property
    def losses(self) -> Sequence[float]: ...

    @property
    def tokens(self) -> int: ...

    @property
    def seconds(self) -> float: ...

    @property
    def tokens_per_second(self) -> float: ...


class RecipeTraining(Protocol):
    """What the core reads of a recipe's training settings."""

    @property
    def seed(self) -> int: ...


class Recipe(Protocol):
    """A fine-tune attack: a corpus, LoRA and training settings, and a dose ladder (steps). A recipe is a frozen
    dataclass (the sweep names its points with dataclasses.replace)."""

    __dataclass_fields__: ClassVar[dict[str, Field[JSON]]]
    name: str
    corpus: str  # the corpus name
    description: str
    control: bool  # a benign control, expected not to lower alignment
    in_domain: str | None  # the probe domain the corpus targets
    doses: tuple[int, ...]
    matched_control: str | None  # the benign recipe on the same questions in the same register, if any
    register: str | None  # the register the corpus is written in (casual / formal), if declared
    register_twin: str | None  # the recipe with the same content in the other register, if any

    @property
    def train(self) -> RecipeTraining: ...

    def from_params(self, params: Mapping[str, JSON]) -> Recipe:
        """This recipe with overrides (corpus, lora, train, doses), as RECIPES.build applies a spec's."""
        ...

    def corpus_sha256(self) -> str: ...

    def config(self) -> JSONDict: ...

    def describe(self) -> JSONDict:
        """The row `persist finetune-attack --list` shows (name, corpus, doses, learning_rate, batch_size, lora,
        control, in_domain, description)."""
        ...

    def spec(self) -> PluginSpec: ...

    def corpus_texts(self) -> list[tuple[str, list[str]]]: ...

    def run(self, model_path: str, out_dir: Path, doses: tuple[int, ...], *,
            on_step: Callable[[int, float], object] | None = None, meta: JSONDict | None = None) -> TrainResult:
        """Fine-tune the model at `model_path` into `out_dir`, keeping an adapter at every dose."""
        ...


@dataclass
class PrepareContext:
    """What an attack is prepared with, once per model: the model, the items split in train and held-out halves,
    a folder in the run for its artefacts (so a resumed run loads them instead of optimising again), the same
    folder of the other model (transfer variants), the scorer (attacker feedback) and the load options."""

    role: str
    other_role: str | None
    target: Target | LazyTarget  # LazyTarget: opened on first use
    train: list[Item]
    heldout: list[Item]
    items: list[Item]  # the items this attack is evaluated on (held-out for a split attack, else every item)
    folder: Path  # this attack's artefacts for this model
    other: Path | None  # the same for the other model (transfer)
    scorer: Scorer
    load: LoadOptions
    compute: dict[str, float] = field(default_factory=dict)


class PreparedAttack:
    """An attack prepared against one model. `transform` gives the held-out items' variants; `wrap` changes the
    target itself (a representation attack changes activations, not prompts); `describe` is what the report
    shows of the artefact (the suffix found, the steering layer); `compute` is what preparing it cost."""

    compute: dict[str, float]

    def transform(self, item: Item) -> list[Variant]:
        raise NotImplementedError

    def wrap(self, target: Target | LazyTarget) -> Target | LazyTarget:
        return target

    def describe(self) -> JSONDict | None:
        return None


def _default(f: Field[JSON]) -> JSON:
    """A dataclass field's default value (its default, or what its default_factory makes)."""
    if f.default is not MISSING:
        return f.default
    if f.default_factory is MISSING:
        raise TypeError(f"attack parameter {f.name!r} has no default")
    return f.default_factory()


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

    def params(self) -> JSONDict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def defaults(cls) -> JSONDict:
        return {f.name: _default(f) for f in fields(cls)}

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

    def companions(self) -> tuple[str, ...]:
        """The specs of the controls this attack always runs with (best-of-N's, steering's random, reversed and
        register directions)."""
        return ()

    @property
    def control_kind(self) -> str:
        """What kind of control this is for its `control_for` attack: "matched" (one control that is the attack
        without its cause), "random" (a directionless draw; the report subtracts the mean of these), "reversed",
        or "register" (the register alone; the report gives the share of the attack's effect it reproduces)."""
        return "matched"

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

