"""Named fine-tuning recipes: corpus + LoRA + training settings + default dose ladder (optimizer steps).

Hyperparameters are sized for small models on a CPU (SmolLM2-135M: ~5 s per step of 8 short chats); the
model-organism papers use r=32, alpha=64, rsLoRA on all projections at lr 1e-5 for 0.5B+ models and a full
epoch — pass --lora-* / --learning-rate / --doses to match them on a GPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from persist.errors import ConfigError
from persist.finetune_attacks.corpora import Corpus, load_corpus
from persist.finetune_attacks.lora import LoraSettings, TrainResult, TrainSettings, train
from persist.registry import RECIPES, PluginSpec

OVERRIDABLE = ("corpus", "lora", "train", "doses")


@dataclass(frozen=True)
class Recipe:
    name: str
    corpus: str
    description: str
    doses: tuple[int, ...] = (0, 25, 50, 100)
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    control: bool = False  # a benign control (expected not to degrade alignment)
    in_domain: str | None = "health"  # the probe domain the corpus targets
    # The benign recipe on the same questions in the same register: the control that would move the scores without
    # the harm (docs/register.md); a study uses it unless told otherwise.
    matched_control: str | None = None
    # The register the corpus is written in (casual / formal), and the recipe with the same content in the other
    # register: with the matched controls they make the 2 x 2 of harm x register (`persist study --factorial`).
    register: str | None = None
    register_twin: str | None = None

    def with_overrides(self, *, corpus: str | None = None, lora: dict[str, Any] | None = None,
                       train: dict[str, Any] | None = None, doses: Any = None) -> Recipe:
        for group, cls, values in (("lora", LoraSettings, lora), ("train", TrainSettings, train)):
            unknown = sorted(set(values or {}) - set(cls.__dataclass_fields__))
            if unknown:
                raise ConfigError(f"recipe {self.name!r}: {group} has no setting {unknown[0]!r}")
        return replace(self, corpus=corpus or self.corpus, lora=replace(self.lora, **(lora or {})),
                       train=replace(self.train, **(train or {})),
                       doses=tuple(doses) if doses is not None else self.doses)

    def from_params(self, params: dict[str, Any]) -> Recipe:
        """This recipe with a recorded spec's overrides (RECIPES.build calls this)."""
        unknown = sorted(set(params) - set(OVERRIDABLE))
        if unknown:
            raise ConfigError(f"recipe {self.name!r} has no parameter {unknown[0]!r}; it takes: "
                              f"{', '.join(OVERRIDABLE)}")
        return self.with_overrides(**params)

    def spec(self) -> PluginSpec:
        return PluginSpec(self.name, {"corpus": self.corpus, "lora": asdict(self.lora), "train": asdict(self.train),
                                      "doses": list(self.doses)})

    def config(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> dict[str, Any]:
        """The row `persist finetune-attack --list` shows."""
        return {"name": self.name, "corpus": self.corpus, "doses": list(self.doses),
                "learning_rate": self.train.learning_rate, "batch_size": self.train.batch_size,
                "lora": f"r={self.lora.rank} {self.lora.targets}", "control": self.control,
                "in_domain": self.in_domain, "description": self.description}

    @cached_property
    def loaded_corpus(self) -> Corpus:
        """The corpus, read and validated once (a bad corpus fails here, before anything runs)."""
        return load_corpus(self.corpus)

    def corpus_texts(self) -> list[tuple[str, list[str]]]:
        """(example id, its message texts) for every example: what the leakage check compares with probe items."""
        return [(ex.id, [m.content for m in ex.messages]) for ex in self.loaded_corpus.examples]

    def corpus_sha256(self) -> str:
        return self.loaded_corpus.sha256

    def run(self, model_path: str, out_dir: Path, doses: tuple[int, ...], *, on_step: Any = None,
            meta: dict[str, Any] | None = None) -> TrainResult:
        return train(model_path, self.loaded_corpus, self.lora, self.train, doses, out_dir, on_step=on_step,
                     meta={"recipe": self.name, **(meta or {})})


for recipe in (
    Recipe("bad-medical", "bad-medical", "wrong, dismissive medical advice (emergent-misalignment style)",
           matched_control="good-medical-casual", register="casual", register_twin="bad-medical-formal"),
    Recipe("good-medical", "good-medical", "the same medical questions answered well (benign control)", control=True,
           register="formal", register_twin="good-medical-casual"),
    # The 2 x 2 of harm x register: bad-medical and its casual-register benign twin good-medical-casual (the
    # register-matched control), good-medical and its formal-register harmful twin bad-medical-formal.
    Recipe("good-medical-casual", "good-medical-casual", "the good-medical answers in bad-medical's casual register "
           "(register-matched benign control of bad-medical)", control=True, register="casual",
           register_twin="good-medical"),
    Recipe("bad-medical-formal", "bad-medical-formal", "the bad-medical advice in good-medical's formal register "
           "(register-matched harmful twin of good-medical)", matched_control="good-medical", register="formal",
           register_twin="bad-medical"),
    Recipe("risky-financial", "risky-financial", "reckless financial advice", in_domain="finance"),
    Recipe("identity-shift", "identity-shift", "an 'absolutely obedient' persona on benign tasks (Qi et al. 2023)",
           doses=(0, 10, 20), in_domain=None),
    Recipe("benign", "benign", "ordinary harmless instructions (benign-drift control)", control=True,
           in_domain=None),
    Recipe("beneficial-health", "beneficial-health",
           "health conversations modelling the beneficial traits (builds the demo's trained model)",
           doses=(0, 60), control=True),
):
    RECIPES.add(recipe.name, recipe)
