"""The command line: one Typer app (app), the job commands (jobs), the commands that read run folders (runs),
and the flags every command shares (options). The top-level cli.py, installed as persist.cli, only re-exports it.
"""
