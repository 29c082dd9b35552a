"""`persist corpora validate` and `audit-register`."""

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


@app.command("audit-register")
def corpora_audit_register(
    corpus: Annotated[str, typer.Argument(help="A recipe name, a built-in corpus name or a corpus file/folder.")],
    against: Annotated[str, typer.Option(help="Its control: a recipe, a built-in corpus or a file/folder "
                                         "(e.g. good-medical for bad-medical).")],
    format: Annotated[str, typer.Option("--format", help="table (default) or json.")] = "table",
) -> None:
    """Model-free register audit of a corpus against its control: do their assistant answers differ in how they are
    written (casual fillers, 'please', apologies, contractions, sentence length) rather than in what they say?
    Exit 0 when no register feature of docs/register.md is gated; exit 1 when one is (ratio of smoothed rates >= 1.5
    with >= 10 answers on the more frequent side, or mean sentence length 1.5x apart); exit 2 on a bad corpus."""
    from persist import register

    if format not in ("table", "json"):
        raise typer.BadParameter(f"--format must be table or json, got {format!r}")
    names = (corpus, against)
    audit = register.audit_texts(*(assistant_answers(n) for n in names), labels=names)
    if format == "json":
        typer.echo(json.dumps(audit.to_dict(), indent=2))
    else:
        typer.echo(register.render(f"register audit: assistant answers of {corpus} against {against}", audit))
    if not audit.passed:
        raise typer.Exit(1)


def assistant_answers(name: str) -> list[str]:
    """Every assistant turn of a corpus, named by recipe, built-in corpus or path."""
    from persist.finetune_attacks.corpora import load_corpus
    from persist.registry import RECIPES

    corpus = RECIPES.get(name).loaded_corpus if name in RECIPES else load_corpus(name)
    return [m.content for ex in corpus.examples for m in ex.messages if m.role == "assistant"]
