"""The persist command line: parse flags, build config objects, call persist. The only wiring point.

Heavy libraries (torch, transformers, peft, garak) are imported inside commands so `persist --help` is fast.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from persist.errors import PersistError

app = typer.Typer(help="Stress-test how well a language model's alignment persists.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)

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


@app.command()
def version() -> None:
    """Print the versions of persist and its main libraries."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as pkg_version

    import persist

    typer.echo(f"persist {persist.__version__}")
    for pkg in ("torch", "transformers", "peft", "accelerate", "datasets", "bitsandbytes", "garak"):
        try:
            typer.echo(f"{pkg} {pkg_version(pkg)}")
        except PackageNotFoundError:
            typer.echo(f"{pkg} (not installed)")


@app.command()
def models() -> None:
    """List the bundled models: installed, converted, size and parameters."""
    from rich.table import Table

    from persist.models import BUNDLED, model_info

    table = Table(title="bundled models")
    table.add_column("name", no_wrap=True)
    for col in ("installed", "converted", "MB", "params"):
        table.add_column(col, justify="right")
    table.add_column("what", overflow="fold")
    for name in BUNDLED:
        row = model_info(name)
        table.add_row(name, "yes" if row["installed"] else "no", "yes" if row["converted"] else "no",
                      str(row["size_mb"] or "-"), f"{row['params_m']}M" if row["params_m"] else "-",
                      row["description"] if row["installed"] else f"install: {row['install']}")
    console().print(table)


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="The user message.")],
    model: ModelOpt = "smollm2-135m-instruct",
    system: Annotated[str, typer.Option(help="Optional system message.")] = "",
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate.")] = 128,
    temperature: Annotated[float, typer.Option(help="0 = greedy.")] = 0.0,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    load_in_4bit: FourBitOpt = False,
    allow_pickle: PickleOpt = False,
    trust_remote_code: RemoteOpt = False,
) -> None:
    """Generate one reply: a smoke test of a model spec."""
    from persist.targets import GenerationConfig, open_target

    config = GenerationConfig(max_new_tokens=max_new_tokens, temperature=temperature)
    target = open_target(model, load_options(device, dtype, load_in_4bit, allow_pickle, trust_remote_code))
    chat = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    typer.echo(target.generate([chat], config)[0])


def main() -> None:
    """Console entry point: PersistError -> one red line and its exit code; anything else is a bug."""
    try:
        app(standalone_mode=False)
    except PersistError as exc:
        if os.environ.get("PERSIST_DEBUG"):
            raise
        console_err().print(f"[red]error:[/red] {exc}", highlight=False, markup=True, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        console_err().print("[yellow]interrupted[/yellow]")
        sys.exit(130)
    except KeyboardInterrupt:
        console_err().print("[yellow]interrupted[/yellow]")
        sys.exit(130)
    except Exception as exc:
        import click

        if isinstance(exc, click.exceptions.UsageError):
            exc.show()
            sys.exit(2)
        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


def console_err():  # noqa: ANN201
    from rich.console import Console

    return Console(stderr=True)


if __name__ == "__main__":
    main()
