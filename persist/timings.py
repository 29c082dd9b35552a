"""Wall time of a run's parts, and how a study's wall time grows with items and seeds (`persist plan`).

Every job appends one line per timed part to RUN/timings.jsonl:

    {"phase": "load" | "score" | "train" | "prepare" | "run", "seconds": ..., "role": ..., "condition": ...,
     "suite": ..., "units": ..., "steps": ..., "session": ...}

- load: opening a model (a base model or a fine-tuned adapter);
- score: the scorer over one condition's missing units of one suite (units: the scored records);
- train: one recipe's training run for one role and seed (steps);
- prepare: an optimised attack's preparation against one model;
- run: the whole job, from its start to its report (one per session: a resumed run adds one).

It is the one file a rerun does not reproduce (wall seconds vary); no report reads it. `cost_of` splits a pilot's
wall time by how each part grows: scoring the probe items grows with the items (and with the seeds under a
fine-tune condition); training, loading the fine-tuned adapters and the side suites (capability, register) under
fine-tune conditions grow with the seeds only; the rest (loading the models for the prompt attacks, preparing
attacks, the side suites under clean and the prompt attacks, writing the report) stays fixed. A prepared attack is
counted as fixed although some look at the train half's items: the prediction is checked without them
(docs/STATUS.md).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any

from persist.conditions import Condition

TIMINGS = "timings.jsonl"
_session = [secrets.token_hex(4)]  # the spans of one job call (a resumed run is another session)


def begin() -> float:
    """A job starts: a new session id for its spans; returns the start time for its run span."""
    _session[0] = secrets.token_hex(4)
    return perf_counter()


def end(folder: Path, started: float) -> None:
    """A job has its report: the run span, from `begin()` to now."""
    log_time(folder, "run", perf_counter() - started)


def log_time(folder: Path, phase: str, seconds: float, **fields: Any) -> None:
    """Append one timed part to RUN/timings.jsonl (best effort: a full disk loses a timing, never a record)."""
    line = {"phase": phase, "seconds": round(float(seconds), 4), "session": _session[0],
            **{k: v for k, v in fields.items() if v is not None}}
    try:
        with (Path(folder) / TIMINGS).open("a", encoding="utf-8") as f:
            f.write(json.dumps(line, sort_keys=True) + "\n")
    except OSError:
        pass


@dataclass(frozen=True)
class Span:
    phase: str
    seconds: float
    session: str = ""
    role: str | None = None
    condition: str | None = None
    suite: str | None = None
    units: int | None = None
    steps: int | None = None


def read_spans(folder: Path) -> list[Span]:
    """The run's timed parts; a torn or foreign line is skipped (timings are advisory)."""
    path = Path(folder) / TIMINGS
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            d = json.loads(line)
            out.append(Span(**{k: d[k] for k in Span.__dataclass_fields__ if k in d}))
        except (ValueError, TypeError, KeyError):
            continue
    return out


def trained(condition: str | None) -> bool:
    if not condition:
        return False
    try:
        return Condition.parse(condition).trained
    except ValueError:
        return False


@dataclass(frozen=True)
class Cost:
    """A pilot's measured wall time, split by how each part grows (seconds at the pilot's items and seeds)."""

    items: int
    seeds: int
    fixed: float  # neither items nor seeds
    per_items: float  # scoring the probe items under clean and the prompt attacks: x items
    per_seeds: float  # training, adapter loads, side suites under fine-tune conditions: x seeds
    per_items_seeds: float  # scoring the probe items under fine-tune conditions: x items x seeds
    measured: float  # the run spans' sum (the pilot's wall time); 0 when no session finished
    complete: bool  # every session that timed a part also finished (its run span is there)

    @property
    def parts(self) -> float:
        return self.fixed + self.per_items + self.per_seeds + self.per_items_seeds

    def predict(self, items: int, seeds: int) -> float:
        """Seconds for the same study at `items` items and `seeds` training seeds, on the pilot's machine."""
        i, s = items / self.items, seeds / self.seeds
        return self.fixed + self.per_items * i + self.per_seeds * s + self.per_items_seeds * i * s


def cost_of(spans: Iterable[Span], main_suites: set[str], items: int, seeds: int) -> Cost | None:
    """Split the spans of a pilot run of `items` probe items and `seeds` training seeds (None: nothing timed).
    `main_suites`: the suites of the probe items (every other suite is a side suite of fixed size)."""
    spans = list(spans)
    parts = [s for s in spans if s.phase != "run"]
    if not parts or items < 1 or seeds < 1:
        return None
    worked = {s.session for s in parts}
    runs = [s for s in spans if s.phase == "run" and s.session in worked]  # not a rerun that only re-reported
    finished = {s.session for s in runs}
    fixed = per_items = per_seeds = per_both = 0.0
    for s in parts:
        grows_items = s.phase == "score" and s.suite in main_suites
        grows_seeds = s.phase == "train" or trained(s.condition)
        if grows_items and grows_seeds:
            per_both += s.seconds
        elif grows_items:
            per_items += s.seconds
        elif grows_seeds:
            per_seeds += s.seconds
        else:
            fixed += s.seconds
    # what no part timed (imports, the report, writing records) in the sessions that finished: fixed
    measured = sum(s.seconds for s in runs)
    timed = sum(s.seconds for s in parts if s.session in finished)
    fixed += max(0.0, measured - timed)
    return Cost(items=items, seeds=seeds, fixed=fixed, per_items=per_items, per_seeds=per_seeds,
                per_items_seeds=per_both, measured=measured,
                complete=bool(runs) and worked <= finished)


def duration(seconds: float) -> str:
    """1 h 05 min / 12 min / 45 s."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{round(s / 60)} min"
    return f"{s} s"
