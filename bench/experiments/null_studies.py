"""Null studies and a planted effect on a real model: does a study on SmolLM2 call differences that are not there,
and does it recover one that is?

    .venv/bin/python bench/experiments/null_studies.py run runs/null        # ten quick-profile --null studies
    .venv/bin/python bench/experiments/null_studies.py run96 runs/null      # one --null study, --limit 96 --seeds 2
    .venv/bin/python bench/experiments/null_studies.py analyse runs/null    # the tables of docs/statistics.md
    .venv/bin/python bench/experiments/null_studies.py --tiny               # the tiny model, one replicate (smoke)

`run` runs `persist study --null --profile quick --null-replicate K` for K = 0..9 on the baseline (default
smollm2-135m-instruct): each study compares the baseline with itself trained under other seeds, and replicate K
trains both with seeds 2000 x K further on, so the ten are independent. Every study resumes where it stopped.

`analyse` groups the studies by design (the ten quick replicates; the 96-item study), rebuilds each study's
report from its records (persist.report.rerender.rebuild: the report path) and counts, over the differences between the two models under trained conditions (under prompt attacks they are
identical by construction), the share whose interval excludes 0 (expected about 5%) and the share with q < 0.05
(expected about 0, after the correction). Then a planted effect of known size (a plasmode): in each null study's
records the model's log-odds under every fine-tune condition are moved by exactly PLANTED nats per item, seed and
reference pair, and the report is rebuilt; its model − baseline shift must contain PLANTED about 95% of the time,
and the verdict rule must call it as often as its detectable difference says. The true size is known because it is
added to real data whose own difference is null by construction (the same model, other seeds).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from persist.api import Record
from persist.stats import wilson_ci

PLANTED = -0.5  # nats: the default effect that matters (--effect), toward misaligned
REPLICATES = 10
BASELINE = "smollm2-135m-instruct"


def study(folder: Path, replicate: int, *, baseline: str, limit: int | None = None, seeds: int = 1,
          tiny: bool = False) -> Path:
    from persist.jobs.study import StudyConfig, run_study
    from persist.models import ModelSpec

    extra: dict[str, Any] = {"limit": limit} if limit else {}
    if tiny:
        extra.update(limit=8, attacks=("persona-helpful-medical",), doses=(0, 2), capability=0, register_suite=None,
                     batch_size=8)
    cfg = StudyConfig(baseline=ModelSpec.parse(baseline), null=True, null_replicate=replicate, profile="quick",
                      seeds=seeds, runs_dir=folder, **extra)
    return run_study(cfg).folder


def planted(records: list[Record], delta: float) -> list[Record]:
    """The model's records under fine-tune conditions with every log-odds moved by delta (per 100 bytes in
    proportion); scores and everything else untouched."""
    out = []
    for r in records:
        d = r.details
        if r.role == "model" and r.condition.startswith("finetune:") and isinstance(d.get("logodds"), (int, float)):
            new = dict(d)
            new["logodds"] = float(d["logodds"]) + delta
            if isinstance(d.get("logodds_per_100b"), (int, float)) and d["logodds"]:
                new["logodds_per_100b"] = float(d["logodds_per_100b"]) * new["logodds"] / float(d["logodds"])
            r = replace(r, details=new)
        out.append(r)
    return out


def trained_differences(report: Any) -> list[Any]:
    """The differences under fine-tune conditions (the study's fine-tune summary repeats its top dose: left out, so
    no difference is counted twice)."""
    return [d for d in report.differences if d.condition.kind == "finetune" and d.shift is not None]


def analyse(folders: list[Path]) -> dict[str, Any]:
    from persist.report.model import StudyMeta, from_json
    from persist.report.rerender import open_run
    from persist.report.study import call_side, study_report

    null_rows, planted_rows = [], []
    for folder in folders:
        header, records = open_run(folder)  # read once: the report as it stands, then with the planted effect
        meta = from_json(StudyMeta, header["study_meta"])
        for d in trained_differences(study_report(records, meta)):
            null_rows.append({"study": folder.name, "condition": d.condition.label, "value": d.shift.value,
                              "lo": d.shift.lo, "hi": d.shift.hi, "q": d.shift.q,
                              "excludes_0": bool(d.shift.lo > 0 or d.shift.hi < 0)})
        for d in trained_differences(study_report(planted(records, PLANTED), meta)):
            planted_rows.append({"study": folder.name, "condition": d.condition.label, "value": d.shift.value,
                                 "lo": d.shift.lo, "hi": d.shift.hi, "mde": d.shift.mde,
                                 "covers": bool(d.shift.lo <= PLANTED <= d.shift.hi),
                                 "called": call_side(d.shift) < 0})

    def share(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
        est = wilson_ci(sum(bool(r[key]) for r in rows), len(rows))
        return {"share": est.value, "lo": est.lo, "hi": est.hi, "n": len(rows)}

    return {"studies": [f.name for f in folders], "planted": PLANTED,
            "null": {"excludes_0": share(null_rows, "excludes_0"),
                     "q_below_05": share([{**r, "q05": r["q"] < 0.05} for r in null_rows], "q05"),
                     "rows": null_rows},
            "planted_effect": {"covers": share(planted_rows, "covers"), "called": share(planted_rows, "called"),
                               "median_detectable": float(np.median([r["mde"] for r in planted_rows]))
                               if planted_rows else None, "rows": planted_rows}}


def fmt_share(s: dict[str, float]) -> str:
    return f"{s['share']:.1%} [{s['lo']:.1%}, {s['hi']:.1%}] of {s['n']}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("action", nargs="?", choices=("run", "run96", "analyse"))
    ap.add_argument("folder", type=Path, nargs="?")
    ap.add_argument("--baseline", default=BASELINE)
    ap.add_argument("--replicates", type=int, default=REPLICATES)
    ap.add_argument("--tiny", action="store_true", help="the tiny random model, one replicate of 8 items (smoke test)")
    args = ap.parse_args(argv)
    from persist import plugins

    plugins.load()
    if args.tiny:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            folders = [study(Path(tmp), 1, baseline="tiny-random", tiny=True)]  # replicate 1: other seeds
            result = analyse(folders)
        print(f"null: interval excludes 0 in {fmt_share(result['null']['excludes_0'])}; planted {PLANTED} nats "
              f"covered in {fmt_share(result['planted_effect']['covers'])}")
        return 0
    if args.action is None or args.folder is None:
        ap.error("give an action (run, run96, analyse) and a folder, or --tiny")
    if args.action == "run":
        for k in range(args.replicates):
            print(study(args.folder, k, baseline=args.baseline), flush=True)
    elif args.action == "run96":
        print(study(args.folder, REPLICATES, baseline=args.baseline, limit=96, seeds=2))
    else:
        groups: dict[str, list[Path]] = {}  # the quick replicates and the 96-item study are reported apart
        for p in sorted(p for p in args.folder.iterdir() if (p / "header.json").is_file()):
            cfg = json.loads((p / "header.json").read_text())["config"]
            groups.setdefault(f"{cfg['limit']} items x {cfg.get('seeds', 1)} seed(s)", []).append(p)
        results = {name: analyse(folders) for name, folders in groups.items()}
        (args.folder / "null_studies.json").write_text(json.dumps(results, indent=1))
        for name, result in results.items():
            print(f"{len(result['studies'])} null studies at {name}; differences under trained conditions:")
            print(f"- interval excludes 0: {fmt_share(result['null']['excludes_0'])} (expected about 5%)")
            print(f"- q < 0.05: {fmt_share(result['null']['q_below_05'])} (expected about 0)")
            p = result["planted_effect"]
            print(f"planted {PLANTED} nats on the model's log-odds under every fine-tune condition:")
            print(f"- interval contains it: {fmt_share(p['covers'])} (expected about 95%)")
            print(f"- called (q < 0.05, interval below 0): {fmt_share(p['called'])}; median detectable difference "
                  f"{p['median_detectable']:.2f} nats")
            for r in result["null"]["rows"] if len(result["studies"]) == 1 else []:
                print(f"  null {r['condition']}: {r['value']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}], q {r['q']:.3f}")
            for r in p["rows"] if len(result["studies"]) == 1 else []:
                print(f"  planted {r['condition']}: {r['value']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}], detectable "
                      f"{r['mde']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
