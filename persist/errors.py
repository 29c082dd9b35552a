"""User-facing errors. Only PersistError subclasses are user errors: the CLI prints one red line and exits
with `exit_code`; anything else is a bug and shows a traceback."""

from __future__ import annotations

import difflib


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


def suggest(name: str, choices: list[str]) -> str:
    """A ' (did you mean X?)' suffix, or '' when nothing is close."""
    if not name or not choices:
        return ""
    # Compare with whole names and with their beginnings, so "smollm" suggests "smollm2-135m-instruct".
    def score(choice: str) -> float:
        whole = difflib.SequenceMatcher(None, name, choice).ratio()
        head = difflib.SequenceMatcher(None, name, choice[: len(name) + 1]).ratio()
        return max(whole, head)

    best = max(choices, key=score)
    return f" (did you mean {best!r}?)" if score(best) >= 0.6 else ""


def unknown_name(kind: str, name: str, choices: list[str]) -> UnknownNameError:
    """The error for an unknown name: the name, a suggestion, and the valid names."""
    return UnknownNameError(
        f"unknown {kind} {name!r}{suggest(name, choices)}; choose from: {', '.join(sorted(choices)) or '(none)'}"
    )
