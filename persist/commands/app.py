"""The one Typer app: persist's own commands (persist.commands.jobs, .runs) and the command groups plugins add
through the `persist.commands` entry-point group (NAME = "module:typer_app"; this distribution adds `probes`,
`attacks` and `corpora`, another distribution can add its own the same way). `main()` is the console entry point.
"""

from __future__ import annotations

import importlib
import os
import sys
from importlib.metadata import entry_points

import typer

from persist.commands import jobs, runs
from persist.errors import PersistError

COMMAND_GROUP = "persist.commands"


def add_plugin_commands(app: typer.Typer) -> list[str]:
    """Add every command group named under the `persist.commands` entry-point group; returns their names."""
    names = []
    for ep in sorted(entry_points(group=COMMAND_GROUP), key=lambda e: e.name):
        module, _, attr = ep.value.partition(":")
        group = getattr(importlib.import_module(module), attr or "app", None)
        if not isinstance(group, typer.Typer):
            # a broken plugin is a bug to see (a traceback), as a plugin that fails to import is (persist.plugins)
            raise TypeError(f"entry point {ep.name} = {ep.value!r} in group {COMMAND_GROUP!r} is not a Typer app")
        app.add_typer(group, name=ep.name)
        names.append(ep.name)
    return names


def build_app() -> typer.Typer:
    app = typer.Typer(help="Stress-test how well a language model's alignment persists.", no_args_is_help=True,
                      add_completion=False, pretty_exceptions_enable=False)
    app.command()(runs.report)
    app.command()(runs.plan)
    add_plugin_commands(app)
    app.registered_commands.extend(jobs.app.registered_commands)

    @app.callback()
    def _load_plugins() -> None:
        from persist import plugins

        plugins.load()

    return app


app = build_app()


def main() -> None:
    """Console entry point: PersistError -> one red line and its exit code; anything else is a bug."""
    run(app)


def run(app: typer.Typer) -> None:
    """Run a Typer app as a program: PersistError -> one red line and its exit code; anything else is a bug.
    (The console script, and programs such as the accelerate launcher that are not `persist` subcommands.)"""
    from persist.report.terminal import console

    try:
        code = app(standalone_mode=False)  # click returns typer.Exit codes instead of raising them here
        if code == 130:  # typer turns Ctrl-C into Exit(130)
            raise KeyboardInterrupt
        if isinstance(code, int) and code:
            sys.exit(code)
    except PersistError as exc:
        if os.environ.get("PERSIST_DEBUG"):
            raise
        from rich.markup import escape

        # escaped: a message may hold brackets (pip install 'persist[search]') that rich would read as markup
        console(stderr=True).print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, markup=True,
                                   soft_wrap=True)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        import shlex

        console(stderr=True).print(f"[yellow]interrupted[/yellow]; what is recorded is kept. Resume with: "
                                   f"{shlex.join(['persist', *sys.argv[1:]])}", highlight=False, soft_wrap=True)
        sys.exit(130)
    except Exception as exc:
        import click

        # typer >= 0.20 vendors click as typer._click: its exceptions are other classes than click's.
        for mod in {click, getattr(typer, "_click", click)}:
            if isinstance(exc, mod.exceptions.UsageError):
                console(stderr=True).print(f"[red]error:[/red] {exc.format_message()}", highlight=False,
                                           soft_wrap=True)
                sys.exit(2)
            exit_type = getattr(mod.exceptions, "Exit", None)
            if exit_type is not None and isinstance(exc, exit_type):
                sys.exit(exc.exit_code)
            if isinstance(exc, mod.ClickException):
                exc.show()
                sys.exit(exc.exit_code)
        raise
