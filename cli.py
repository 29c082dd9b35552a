"""The persist command line: the one Typer app of persist.commands, plugin command groups included.

Installed, this module is `persist.cli` (see setup.py); `persist = "persist.cli:main"` is the console script.
"""

from __future__ import annotations

from persist.commands.app import app, build_app, main

__all__ = ["app", "build_app", "main"]

if __name__ == "__main__":
    main()
