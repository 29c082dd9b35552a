"""Conditions: what was done to a model before its items were scored. The one owner of their text form.

    clean                          nothing (the "before")
    attack:NAME[:key=value...]     a prompt attack, with the parameters that differ from its defaults
    finetune:RECIPE@DOSE[:seed=K]  a fine-tune along a recipe's ladder, DOSE optimizer steps, training seed K
    intervention:NAME[:seed=K]     a study's summary over several conditions (e.g. the mean over prompt attacks)

Records and report.json carry the text form (`label`); code passes `Condition` objects and never splits labels
by hand. Dose validation lives here too, since a dose is part of a fine-tune condition.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from persist.errors import ConfigError

KINDS = ("clean", "attack", "finetune", "intervention")
PROMPT_ATTACKS = "prompt-attacks"  # the intervention that averages the prompt attacks: nothing in it is trained


@dataclass(frozen=True)
class Condition:
    kind: str
    name: str = ""
    params: tuple[tuple[str, str], ...] = ()  # attacks only: (key, value) pairs that differ from the defaults
    dose: int = 0  # fine-tunes only: optimizer steps
    seed: int = 0  # fine-tunes and interventions: which training seed (0 = the first, left out of the label)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"condition kind {self.kind!r}: one of {', '.join(KINDS)}")

    @property
    def label(self) -> str:
        if self.kind == "clean":
            return "clean"
        if self.kind == "attack":
            return ":".join(["attack", self.name, *(f"{k}={v}" for k, v in self.params)])
        seed = f":seed={self.seed}" if self.seed else ""
        if self.kind == "finetune":
            return f"finetune:{self.name}@{self.dose}{seed}"
        return f"intervention:{self.name}{seed}"

    @property
    def trained(self) -> bool:
        """Whether a training run (with its seed) stands behind this condition: fine-tunes and every intervention
        but the prompt-attack average. Nothing is trained under clean or a prompt attack: no seed spread exists."""
        return self.kind == "finetune" or (self.kind == "intervention" and self.name != PROMPT_ATTACKS)

    @property
    def base(self) -> Condition:
        """The same condition for the first seed: what the seeds of one fine-tune have in common."""
        return replace(self, seed=0)

    @property
    def short(self) -> str:
        """The label without its kind, for table cells ('many-shot:k=4', 'bad-medical@8')."""
        return self.label.split(":", 1)[1] if ":" in self.label else self.label

    def __str__(self) -> str:
        return self.label

    @classmethod
    def parse(cls, label: str) -> Condition:
        kind, sep, rest = label.partition(":")
        if label == "clean":
            return CLEAN
        if not sep or not rest or kind not in KINDS:
            raise ValueError(f"condition {label!r}: expected clean, attack:NAME, finetune:RECIPE@DOSE or "
                             "intervention:NAME")
        if kind == "attack":
            name, *pairs = rest.split(":")
            return cls("attack", name, tuple(tuple(p.split("=", 1)) for p in pairs))  # type: ignore[misc]
        seed = 0
        head, sep, tail = rest.rpartition(":seed=")
        if sep and tail.isdigit():
            rest, seed = head, int(tail)
        if kind == "finetune":
            recipe, _, dose = rest.rpartition("@")
            if not recipe or not dose.isdigit():
                raise ValueError(f"condition {label!r}: expected finetune:RECIPE@DOSE[:seed=K]")
            return finetune(recipe, int(dose), seed)
        return cls("intervention", rest, seed=seed)


CLEAN = Condition("clean")


def attack(name: str, params: dict[str, Any], defaults: dict[str, Any]) -> Condition:
    """An attack's condition: its name and every parameter that differs from the attack's defaults."""
    changed = tuple((k, "|".join(v) if isinstance(v, tuple) else str(v)) for k, v in params.items()
                    if defaults.get(k) != v)
    return Condition("attack", name, changed)


def finetune(recipe: str, dose: int, seed: int = 0) -> Condition:
    """Dose 0 of any recipe (any seed) is the untouched model: the clean condition."""
    return CLEAN if dose == 0 else Condition("finetune", recipe, dose=dose, seed=seed)


def intervention(name: str, seed: int = 0) -> Condition:
    return Condition("intervention", name, seed=seed)


def valid_doses(doses: tuple[int, ...]) -> tuple[int, ...]:
    """Sorted, unique doses including 0 (the before); at least one positive dose."""
    if not doses:
        raise ConfigError("--doses is empty; give steps such as 0,25,50,100")
    bad = [d for d in doses if d < 0]
    if bad:
        raise ConfigError(f"--doses must be >= 0 optimizer steps; got {bad}")
    if max(doses) == 0:
        raise ConfigError("--doses has no positive dose; add steps such as 25,50")
    return tuple(sorted(set(doses) | {0}))
