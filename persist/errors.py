"""User-facing errors. Only PersistError subclasses are user errors: the CLI prints one red line and exits
with `exit_code`; anything else is a bug and shows a traceback."""

from __future__ import annotations


class PersistError(Exception):
    """Base of every error caused by the user's input or environment rather than by a bug."""

    exit_code = 2


class ConfigError(PersistError):
    """A bad flag, option or configuration value."""


class UnknownNameError(PersistError):
    """A registry name (suite, attack, scorer, recipe, bundled model) that does not exist."""


class ModelLoadError(PersistError):
    """A --model spec that cannot be resolved or loaded."""


class DataError(PersistError):
    """Malformed user data (JSONL items, corpora); the message carries file:line."""


class ResumeMismatchError(PersistError):
    """A run folder exists with a different configuration than the one asked for."""


class TargetError(PersistError):
    """A model endpoint failed (unreachable, refused, timed out) after bounded retries."""

    exit_code = 1


class RunWriteError(PersistError):
    """The run folder cannot be written (disk full, permissions); what was recorded before is kept."""
