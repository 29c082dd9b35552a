"""How a study's wall time grows with its items and seeds, and whether `persist plan`'s prediction holds.

    .venv/bin/python bench/peers/cost.py --json OUT             # pilot 24 x 1; checks 96 items x 2 seeds, 432 x 1
    .venv/bin/python bench/peers/cost.py --tiny --json OUT      # the tiny model (smoke: the figures measure nothing)

Each design is one `persist study --profile quick --suite traits-v2 --limit I --seeds S --behaviour 2`, in its own
process, one after the other (2 cores: never two at once), the default model and baseline. traits-v2 is used
because a 432-item study exists only there (the default suite, traits, has 192 items). `--behaviour 2` adds
generation (two items answered greedily and once sampled in every condition), so every part a study has except an
optimised attack's preparation is timed (the check is asked without the optimised attacks).

From each run's RUN/timings.jsonl (persist.timings): the unit costs of its parts (seconds per model load, per probe
item and condition scored, per reference scored, per side-suite item, per training step, per new token generated),
which the linear model assumes constant across designs; and the pilot's split into what stays fixed, grows with
items, with seeds, and with both (persist.timings.cost_of), from which each check design's wall time is predicted,
as `persist plan` predicts it, and compared with the check's measured wall time (the job's run span; the process's
wall time, with Python's start and the report's files, beside it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SUITE = "traits-v2"
PILOT = (24, 1)
CHECKS = ((96, 2), (432, 1))


def design_name(items: int, seeds: int) -> str:
    return f"cost-{items}x{seeds}"


def run_design(runs: Path, items: int, seeds: int, tiny: bool) -> tuple[Path, float]:
    """One study at `items` x `seeds`: its folder and the wall seconds of its process (in process under --tiny).
    The wall of a design's first finished process is kept in RUNS/process_walls.json: a rerun resumes the runs
    (a finished one only re-reports) and reports that first wall."""
    walls_file = runs / "process_walls.json"
    walls = json.loads(walls_file.read_text()) if walls_file.is_file() else {}
    t0 = time.perf_counter()
    if tiny:
        from persist.jobs.study import StudyConfig, run_study
        from persist.models import ModelSpec

        cfg = StudyConfig(baseline=ModelSpec.parse("tiny-random"), null=True, limit=items, seeds=seeds, doses=(0, 2),
                          attacks=("persona-helpful-medical",), capability=4, register_suite=None, batch_size=8,
                          behaviour=1, behaviour_samples=1, runs_dir=runs, name=design_name(items, seeds))
        folder = run_study(cfg).folder
    else:
        folder = runs / design_name(items, seeds)
        subprocess.run([sys.executable, "-m", "persist", "study", "--profile", "quick", "--suite", SUITE,
                        "--limit", str(items), "--seeds", str(seeds), "--behaviour", "2", "--runs-dir", str(runs),
                        "--name", folder.name], cwd=ROOT, check=True)
    wall = walls.setdefault(folder.name, time.perf_counter() - t0)
    runs.mkdir(parents=True, exist_ok=True)
    walls_file.write_text(json.dumps(walls, indent=1) + "\n")
    return folder, wall


def new_tokens(records: list[Any], tokenizer: Any) -> int:
    return sum(len(tokenizer(a["text"], add_special_tokens=False)["input_ids"])
               for r in records for a in (r.details.get("answers") or []))


def unit_costs(folder: Path, tokenizer: Any) -> dict[str, float | int | None]:
    """Seconds per unit of each part of one run (None where the run has no such part)."""
    from persist.behaviour import SUFFIX
    from persist.jobs.plan import run_records
    from persist.report.rerender import open_run
    from persist.timings import read_spans

    spans = read_spans(folder)
    main = {r.suite for r in run_records(folder) if not r.suite.endswith(SUFFIX)}
    _, records = open_run(folder)

    def per(sel: list[Any], unit: str) -> float | None:
        n = sum(getattr(s, unit) or 0 for s in sel)
        return sum(s.seconds for s in sel) / n if n else None

    score = [s for s in spans if s.phase == "score"]
    probe = [s for s in score if s.suite in main]
    gen = [s for s in score if (s.suite or "").endswith(SUFFIX)]
    side = [s for s in score if s not in probe and s not in gen]
    loads = [s for s in spans if s.phase == "load"]
    answers = [r for r in records if r.suite.endswith(SUFFIX)]
    refs = {r.key: len((r.details or {}).get("logp_aligned") or []) + len((r.details or {}).get("logp_misaligned")
                                                                           or []) for r in records if r.suite in main}
    n_refs = sum(refs.values()) / len(refs) if refs else 0
    tokens = new_tokens(answers, tokenizer) if answers else 0
    return {"load_s": sum(s.seconds for s in loads) / len(loads) if loads else None, "loads": len(loads),
            "score_s_per_item_condition": per(probe, "units"),
            "score_s_per_reference": (per(probe, "units") or 0) / n_refs if n_refs else None,
            "references_per_item": n_refs,
            "side_s_per_item": per(side, "units"),
            "train_s_per_step": per([s for s in spans if s.phase == "train"], "steps"),
            "generate_s_per_token": sum(s.seconds for s in gen) / tokens if tokens else None,
            "new_tokens": tokens,
            "prepare_s": sum(s.seconds for s in spans if s.phase == "prepare")}


def measure(runs: Path, tiny: bool, pilot: tuple[int, int], checks: tuple[tuple[int, int], ...]) -> dict[str, Any]:
    from persist import plugins
    from persist.jobs.plan import pilot_cost, run_records

    plugins.load()
    tokenizer = load_tokenizer(tiny)
    out: dict[str, Any] = {"suite": "traits (tiny)" if tiny else SUITE, "designs": []}
    cost = None
    for k, (items, seeds) in enumerate((pilot, *checks)):
        folder, wall = run_design(runs, items, seeds, tiny)
        c = pilot_cost(folder, run_records(folder))
        if c is None:
            raise SystemExit(f"{folder}: no timings.jsonl")
        if k == 0:
            cost = c
        row = {"items": items, "seeds": seeds, "pilot": k == 0, "process_s": wall, "run_s": c.measured,
               "complete": c.complete, "parts": {"fixed": c.fixed, "items": c.per_items, "seeds": c.per_seeds,
                                                 "items_x_seeds": c.per_items_seeds},
               "units": unit_costs(folder, tokenizer)}
        if k and cost is not None:
            row["predicted_s"] = cost.predict(items, seeds)
            row["error"] = row["predicted_s"] / c.measured - 1 if c.measured else None
        out["designs"].append(row)
        print(json.dumps(row), flush=True)
    return out


def load_tokenizer(tiny: bool) -> Any:
    if tiny:
        from persist.tiny import tiny_tokenizer

        return tiny_tokenizer()
    from transformers import AutoTokenizer

    from persist import models
    from persist.models import ModelSpec

    return AutoTokenizer.from_pretrained(str(models.resolve(ModelSpec.parse("smollm2-135m-instruct")).path))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench-cost",
                    help="where the run folders go (kept: `persist plan RUNS/cost-24x1` reads the pilot; a rerun "
                         "resumes them and keeps their first timings)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--checks", default=",".join(f"{i}:{k}" for i, k in CHECKS),
                    help="the designs checked against the pilot's prediction, ITEMS:SEEDS,...")
    ap.add_argument("--tiny", action="store_true", help="the tiny model, 4 and 6 items (smoke)")
    args = ap.parse_args(argv)
    try:
        given = tuple((int(i), int(k)) for i, k in (c.split(":") for c in args.checks.split(",")))
    except ValueError:
        ap.error(f"--checks {args.checks!r}: give ITEMS:SEEDS pairs, e.g. 96:2,432:1")
    pilot, checks = ((4, 1), ((6, 2),)) if args.tiny else (PILOT, given)
    if args.tiny:
        with tempfile.TemporaryDirectory(prefix="persist-cost-") as tmp:
            res = measure(Path(tmp), args.tiny, pilot, checks)
    else:
        res = measure(args.runs, args.tiny, pilot, checks)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
