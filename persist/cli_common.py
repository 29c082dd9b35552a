"""Shared pieces of the command line: option types, consoles, load options, dose parsing."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from persist.errors import ConfigError

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Bundled name, folder, .gguf, hub id, openai:MODEL@URL; "
                                       "append +ADAPTER_DIR for a peft adapter.")]
DtypeOpt = Annotated[str, typer.Option(help="auto (fp32 on CPU, bf16 on GPU), float32, bfloat16, float16.")]
DeviceOpt = Annotated[str, typer.Option(help="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps.")]
FourBitOpt = Annotated[bool, typer.Option("--load-in-4bit", help="Load weights in 4-bit NF4 via bitsandbytes.")]
PickleOpt = Annotated[bool, typer.Option("--allow-pickle", help="Allow pickle (.bin) checkpoints; they can run code.")]
RemoteOpt = Annotated[bool, typer.Option("--trust-remote-code", help="Run model code shipped with the weights.")]


def console():  # noqa: ANN201 - rich is imported lazily
    from rich.console import Console

    return Console()


def load_options(device: str, dtype: str, load_in_4bit: bool, allow_pickle: bool, trust_remote_code: bool):  # noqa: ANN201
    from persist.models import LoadOptions

    return LoadOptions(device=device, dtype=dtype, load_in_4bit=load_in_4bit, allow_pickle=allow_pickle,
                       trust_remote_code=trust_remote_code)


SuiteOpt = Annotated[str, typer.Option(help="Suite name (see `persist probes list`) or a .jsonl file of items.")]
ScorerOpt = Annotated[str, typer.Option(help="likelihood (no judge), judge, or refusal.")]
LimitOpt = Annotated[int | None, typer.Option(help="Score a subset covering every trait x domain cell.")]
RunsOpt = Annotated[Path, typer.Option(help="Where run folders go.")]
NameOpt = Annotated[str | None, typer.Option(help="Run folder name (default from model and suite).")]
JudgeOpt = Annotated[str | None, typer.Option(help="Judge model spec for --scorer judge.")]
RefusalClassifierOpt = Annotated[str, typer.Option(
    help="For --scorer refusal: learned (SmolLM2 read-out, default) or rules (regular expressions, no model).")]


def parse_doses(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"--doses {text!r}: give comma-separated whole numbers of steps, e.g. 0,25,50") from None


def console_err():  # noqa: ANN201
    from rich.console import Console

    return Console(stderr=True)
