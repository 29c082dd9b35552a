"""`persist attacks list`."""

from __future__ import annotations

import json

import typer

from persist.commands.options import FormatOpt, check_format

app = typer.Typer(help="Prompt attacks.", no_args_is_help=True)


@app.command("list")
def attacks_list(format: FormatOpt = "table") -> None:
    """Show each attack family with a one-line description and its parameters."""
    from persist.registry import ATTACKS

    rows = []
    for name in ATTACKS.names():
        cls = ATTACKS.get(name)
        rows.append({"name": name, "description": cls.description, "control": cls.control,
                     "in_domain": cls.in_domain, "parameters": {k: list(v) if isinstance(v, tuple) else v
                                                                for k, v in cls.defaults().items()}})
    if check_format(format):
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    from persist.report.terminal import console

    t = Table(title="attacks")
    t.add_column("name", no_wrap=True)
    t.add_column("description", overflow="fold")
    t.add_column("parameters (defaults)", overflow="fold")
    for r in rows:
        params = ", ".join(f"{k}={v!r}" for k, v in r["parameters"].items()) or "-"
        t.add_row(r["name"] + (" (control)" if r["control"] else ""), r["description"], params)
    console().print(t)
