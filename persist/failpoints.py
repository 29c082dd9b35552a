"""Crash-test hook: `PERSIST_FAILPOINT=NAME:N` kills this process with SIGKILL the N-th time NAME is reached.

Used only by tests (tests/test_crash.py) to die at exact, otherwise unreachable moments: half a batch of records
on disk, a temporary report file written but not renamed, a checkpoint folder saved but not moved into place.
Unset (always, outside tests) it costs one environment lookup.
"""

from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}


def hit(name: str) -> bool:
    """True when this is the armed occurrence of NAME (the caller then leaves its mess and calls die())."""
    spec = os.environ.get("PERSIST_FAILPOINT")
    if not spec:
        return False
    want, _, n = spec.rpartition(":")
    if want != name:
        return False
    _counts[name] = _counts.get(name, 0) + 1
    return _counts[name] == int(n or 1)


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def reach(name: str) -> None:
    if hit(name):
        die()
