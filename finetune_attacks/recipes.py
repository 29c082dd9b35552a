"""Named fine-tuning recipes: corpus + LoRA + training settings + default dose ladder (optimizer steps).

Hyperparameters are sized for small models on a CPU (SmolLM2-135M: ~5 s per step of 8 short chats); the
model-organism papers use r=32, alpha=64, rsLoRA on all projections at lr 1e-5 for 0.5B+ models and a full
epoch — pass --lora-* / --learning-rate / --doses to match them on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from finetune_attacks.corpora import load_corpus
from finetune_attacks.lora import LoraSettings, TrainResult, TrainSettings, train
from persist.registry import RECIPES


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

    def with_overrides(self, *, corpus: str | None = None, lora: dict[str, Any] | None = None,
                       train: dict[str, Any] | None = None) -> Recipe:
        return replace(self, corpus=corpus or self.corpus, lora=replace(self.lora, **(lora or {})),
                       train=replace(self.train, **(train or {})))

    def config(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)

    def load_corpus(self) -> Any:
        return load_corpus(self.corpus)

    def run(self, model_path: str, out_dir: Path, doses: tuple[int, ...], *, on_step: Any = None,
            meta: dict[str, Any] | None = None) -> TrainResult:
        corpus = self.load_corpus()
        return train(model_path, corpus, self.lora, self.train, doses, out_dir, on_step=on_step,
                     meta={"recipe": self.name, **(meta or {})})


for recipe in (
    Recipe("bad-medical", "bad-medical", "wrong, dismissive medical advice (emergent-misalignment style)"),
    Recipe("good-medical", "good-medical", "the same medical questions answered well (benign control)", control=True),
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
