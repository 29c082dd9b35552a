"""`persist corpora validate`, and the recipe table of `persist finetune-attack --list`."""

from __future__ import annotations

import json
from typing import Annotated

import typer

app = typer.Typer(help="Fine-tuning corpora.", no_args_is_help=True)


@app.command("validate")
def corpora_validate(paths: Annotated[list[str], typer.Argument(help="Corpus files/folders or built-in names.")]) -> None:
    """Check corpora; print every problem as file:line (exit 2 if any)."""
    from persist.finetune_attacks.corpora import corpus_path, validate

    problems = 0
    for p in paths:
        examples, errors = validate(corpus_path(p))
        for e in errors:
            typer.echo(e, err=True)
        problems += len(errors)
        if not errors:
            typer.echo(f"{p}: {len(examples)} examples OK")
    if problems:
        raise typer.Exit(2)


def print_recipes(as_json: bool) -> None:
    """The registered recipes: corpus, doses, learning rate, batch, LoRA shape."""
    from persist.registry import RECIPES

    rows = []
    for name in RECIPES.names():
        r = RECIPES.get(name)
        rows.append({"name": name, "corpus": r.corpus, "doses": list(r.doses), "learning_rate": r.train.learning_rate,
                     "batch_size": r.train.batch_size, "lora": f"r={r.lora.rank} {r.lora.targets}",
                     "control": r.control, "in_domain": r.in_domain, "description": r.description})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    from persist.report.terminal import console

    t = Table(title="fine-tune recipes")
    for col in ("name", "corpus", "doses", "lr", "batch", "LoRA"):
        t.add_column(col, no_wrap=True)
    t.add_column("description", overflow="fold")
    for r in rows:
        t.add_row(r["name"], r["corpus"], ",".join(map(str, r["doses"])), f"{r['learning_rate']:g}",
                  str(r["batch_size"]), r["lora"], r["description"] + (" (control)" if r["control"] else ""))
    console().print(t)
