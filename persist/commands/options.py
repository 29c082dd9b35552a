"""The command line's shared flags: option types, and one decorator that gives every command that loads a model
the same loading flags (--device, --dtype, --load-in-4bit, --allow-pickle, --trust-remote-code, --engine, --tp,
--tokenizer).

Only cli.py and the plugins' command modules use this; it imports typer, nothing heavy.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from persist.errors import ConfigError
from persist.registry import PluginSpec

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Bundled name, folder, .gguf, hub id, openai:MODEL@URL; "
                                       "append +ADAPTER_DIR for a peft adapter.")]
SuiteOpt = Annotated[str, typer.Option(help="Suite name (see `persist probes list`) or a .jsonl file of items.")]
ScorerOpt = Annotated[str, typer.Option(help="likelihood (no judge), judge, or refusal; parameters as "
                                        "name:key=value.")]
LimitOpt = Annotated[int | None, typer.Option(help="Score a subset covering every trait x domain cell.")]
RunsOpt = Annotated[Path, typer.Option(help="Where run folders go.")]
NameOpt = Annotated[str | None, typer.Option(help="Run folder name (default from model and suite).")]
JudgeOpt = Annotated[str | None, typer.Option(help="Judge model spec: grades answers for --scorer judge, and the "
                                             "answers of --behaviour N (any model spec, openai:MODEL@URL included).")]
BehaviourOpt = Annotated[int, typer.Option(help="Generate answers to N of the items under every condition (greedy "
                                           "plus --behaviour-samples sampled), graded by --judge or by hand labels "
                                           "(`persist probes grade`); 0: none.")]
BehaviourSamplesOpt = Annotated[int, typer.Option(help="Answers sampled at temperature 1 per item and condition "
                                                  "for --behaviour, beside the greedy one.")]
JudgeModeOpt = Annotated[str | None, typer.Option(help="For --scorer judge: em (aligned/coherent 0-100, default) "
                                                  "or rubric.")]
MaxNewOpt = Annotated[int | None, typer.Option(help="Answer length for generation scorers (default 128).")]
RefusalClassifierOpt = Annotated[str | None, typer.Option(
    help="For --scorer refusal: learned (SmolLM2 read-out, default) or rules (regular expressions, no model).")]
MatchedOpt = Annotated[bool, typer.Option("--matched-controls/--no-matched-controls", help=(
    "Add a length-matched neutral-context control for each attack that only adds context, so the report gives "
    "attack minus control."))]
SeedsOpt = Annotated[int, typer.Option(help="Independent training seeds per model and dose (data order, LoRA "
                                      "initialisation); estimates pool seeds x items.")]
EffectOpt = Annotated[float, typer.Option(help="The smallest log-odds shift that matters, in nats (default 0.5: "
                                          "docs/statistics.md says why): tests that cannot detect it with 80% power "
                                          "are marked underpowered.")]
EffectPointsOpt = Annotated[float, typer.Option(help="The smallest difference that matters on the 0-1 score and "
                                                "rates, in points (default 0.13, the paper's smallest).")]
CapabilityOpt = Annotated[int | None, typer.Option(help="Capability items (multiple choice, scorer choice) scored "
                                                  "beside alignment at every condition; 0 turns the check off.")]
FormatOpt = Annotated[str, typer.Option("--format", help="table (default) or json.")]
# Fine-tuning flags: `persist finetune-attack` and the accelerate launcher (persist.finetune_attacks.launch).
RecipeOpt = Annotated[str, typer.Option(help="Recipe name (see `persist finetune-attack --list`).")]
DosesOpt = Annotated[str | None, typer.Option(help="Optimizer steps to checkpoint and score, e.g. 0,25,50,100.")]
LearningRateOpt = Annotated[float | None, typer.Option(help="Override the recipe's learning rate.")]
BatchSizeOpt = Annotated[int | None, typer.Option(help="Examples per optimizer step.")]
TrainSeedOpt = Annotated[int | None, typer.Option("--seed", help="Seed for data order and init.")]

# The loading flags, added to a command by @with_load_options (name -> annotated type and default).
LOAD_FLAGS: dict[str, tuple[Any, Any]] = {
    "device": (Annotated[str, typer.Option(help="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps.")], "auto"),
    "dtype": (Annotated[str, typer.Option(help="auto (fp32 on CPU, bf16 on GPU), float32, bfloat16, float16.")],
              "auto"),
    "load_in_4bit": (Annotated[bool, typer.Option("--load-in-4bit", help="Load weights in 4-bit NF4 via "
                                                   "bitsandbytes (QLoRA when fine-tuning).")], False),
    "allow_pickle": (Annotated[bool, typer.Option("--allow-pickle", help="Allow pickle (.bin) checkpoints; they can "
                                                   "run code.")], False),
    "trust_remote_code": (Annotated[bool, typer.Option("--trust-remote-code", help="Run model code shipped with "
                                                        "the weights.")], False),
    "engine": (Annotated[str, typer.Option(help="What runs a local model: hf (transformers), vllm (CUDA; pip "
                                           "install 'persist\\[vllm]'; adapters served as LoRA) or llamacpp "
                                           "(generation by llama.cpp on a GGUF, scoring by hf; no adapters).")],
               "hf"),
    "tp": (Annotated[int, typer.Option(help="Tensor-parallel GPUs per model (--engine vllm).")], 1),
    "tokenizer": (Annotated[str | None, typer.Option(help="For openai:MODEL@URL: the model's tokenizer (bundled "
                                                     "name, folder, .gguf, hub id), so log-likelihoods are scored "
                                                     "on its chat template as locally.")], None),
}


def with_flag_group(param: str, flags: dict[str, tuple[Any, Any]],
                    build: Callable[[dict[str, Any]], Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator that replaces a command's `param` parameter with the flags of a group (name -> annotated type and
    default); the command receives `build(values of those flags)`. So a group of flags is declared once and every
    command that takes it has the same flags, with the same help."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        hints = typing.get_type_hints(fn, include_extras=True)
        sig = inspect.signature(fn)
        params = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in sig.parameters.values()
                  if p.name != param]
        params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=tp, default=default)
                   for name, (tp, default) in flags.items()]

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            return fn(**{param: build({name: kwargs.pop(name) for name in flags})}, **kwargs)

        del command.__wrapped__  # typer must read the new signature, not the wrapped function's
        command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate


def _load_options(values: dict[str, Any]) -> Any:
    from persist.models import LoadOptions

    return LoadOptions(**values)


# Replace the command's `load` parameter with the loading flags (LOAD_FLAGS); the command gets a LoadOptions.
with_load_options = with_flag_group("load", LOAD_FLAGS, _load_options)


@dataclass(frozen=True)
class RunFlags:
    """The flags every job command shares: which items, how they are scored, where the run folder goes."""

    suite: str
    scorer: str
    limit: int | None
    judge: str | None
    runs_dir: Path
    name: str | None
    behaviour: int = 0
    behaviour_samples: int = 2

    def options(self, **scorer_flags: Any) -> dict[str, Any]:
        """Keyword arguments of a job config (persist.jobs.options.RunOptions) from these flags; `scorer_flags`
        are a command's own scorer flags (judge mode, answer length, refusal classifier)."""
        # --judge grades the scorer's answers with --scorer judge, else the behaviour step's answers
        judges_scorer = PluginSpec.parse(self.scorer, "scorer").name == "judge"
        return {"suite": self.suite, "limit": self.limit, "runs_dir": self.runs_dir, "name": self.name,
                "scorer": scorer_spec(self.scorer, judge=self.judge if judges_scorer else None, **scorer_flags),
                "behaviour": self.behaviour, "behaviour_samples": self.behaviour_samples,
                "judge": None if judges_scorer else self.judge}


# The run flags, added to every job command by @with_run_options (name -> annotated type and default).
RUN_FLAGS: dict[str, tuple[Any, Any]] = {
    "suite": (SuiteOpt, "traits"), "scorer": (ScorerOpt, "likelihood"), "limit": (LimitOpt, None),
    "judge": (JudgeOpt, None), "runs_dir": (RunsOpt, Path("runs")), "name": (NameOpt, None),
    "behaviour": (BehaviourOpt, 0), "behaviour_samples": (BehaviourSamplesOpt, 2),
}
with_run_options = with_flag_group("run", RUN_FLAGS, lambda values: RunFlags(**values))

# The flags of the scorers that generate an answer (judge, refusal), for the commands that offer those scorers;
# the command receives them as `scorer_flags` (a dict for RunFlags.options).
SCORER_FLAGS: dict[str, tuple[Any, Any]] = {
    "judge_mode": (JudgeModeOpt, None), "max_new_tokens": (MaxNewOpt, None),
    "refusal_classifier": (RefusalClassifierOpt, None),
}
with_scorer_flags = with_flag_group("scorer_flags", SCORER_FLAGS, dict)


def scorer_spec(scorer: str, *, judge: str | None = None, judge_mode: str | None = None,
                max_new_tokens: int | None = None, refusal_classifier: str | None = None) -> PluginSpec:
    """The scorer spec from --scorer NAME[:key=value] plus the scorer flags the user gave. A flag the chosen scorer
    does not take is refused by the registry when the scorer is built ('scorer X has no parameter Y')."""
    spec = PluginSpec.parse(scorer, "scorer")
    flags = {"judge": judge, "mode": judge_mode, "max_new_tokens": max_new_tokens, "classifier": refusal_classifier}
    return PluginSpec(spec.name, {**spec.params, **{k: v for k, v in flags.items() if v is not None}})


def parse_doses(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"--doses {text!r}: give comma-separated whole numbers of steps, e.g. 0,25,50") from None


def check_format(fmt: str) -> bool:
    """True for json, False for table; anything else is a usage error."""
    if fmt not in ("table", "json"):
        raise ConfigError(f"--format {fmt!r}: choose table or json")
    return fmt == "json"
