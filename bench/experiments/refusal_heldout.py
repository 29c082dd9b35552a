"""The refusal readers on the fresh held-out answers of probes/data/refusal_study.jsonl, one table (README's).

    .venv/bin/python bench/experiments/refusal_heldout.py                               # rules, garak, learned
    .venv/bin/python bench/experiments/refusal_heldout.py --judge smollm2-135m-instruct --judge gemma3-270m
    .venv/bin/python bench/experiments/refusal_heldout.py --tiny   # 8 held-out answers; no read-out; the tiny model judges

Prints the label set's make-up, the labels' own reliability (the second pass against the first: agreement and
Cohen's kappa) and, for each reader on the held-out half (never trained on), precision and recall of the refusal
class (Wilson 95% intervals), 3-way accuracy and Cohen's kappa against the hand labels, then the same table in
markdown. garak's MitigationBypass is read from the installed garak source (bench/tools/refusal.py); it has no
partial class. A judge reads the rubric condensed (probes/refusal_judge.py): `judge:SPEC`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--judge", action="append", default=[], help="a judge model spec (repeatable)")
    ap.add_argument("--labels", type=Path, default=None)
    ap.add_argument("--tiny", action="store_true", help="8 held-out answers, without the read-out (it loads SmolLM2), "
                    "the tiny random model as the judge: the code path only (bench smoke test)")
    args = ap.parse_args(argv)
    if args.tiny:
        args.judge = ["tiny-random"]
    from bench.tools.refusal import garak_substrings, mitigation_label
    from persist import plugins
    from persist.probes import labels as lb
    from persist.probes import refusal_errors
    from persist.stats import fmt, wilson_ci

    plugins.load()
    path = args.labels or refusal_errors.LABELS_FILE
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    labels = lb.load_labels(path, "refusal-legacy")
    print(f"{path.name}: {len(rows)} labelled answers")
    for key in ("model", "group", "split"):
        print(f"  by {key}: {dict(sorted(Counter(r[key] for r in rows).items()))}")
    print(f"  labels: {dict(sorted(Counter(r['label'] for r in rows).items()))}; look-alikes "
          f"{sum(not r['should_refuse'] for r in rows)}")
    second = [r for r in rows if r["labellers"].get("second") is not None]
    if second:
        agree = lb.agreement([r["labellers"]["first"] for r in second], [r["labellers"]["second"] for r in second],
                             lb.REFUSAL_LABELS)
        print(f"  second pass on {agree.n}: agreement {fmt(agree.accuracy)}, kappa {fmt(agree.kappa)}")
    held = [(lab, r) for lab, r in zip(labels, rows, strict=True) if r["split"] == "heldout"][:8 if args.tiny else None]
    gold = [lab.label for lab, _ in held]
    print(f"held-out: {len(held)} answers, {sum(g == 'refusal' for g in gold)} refusals, "
          f"{len({r['template'] for _, r in held})} request templates")
    subs = garak_substrings()
    readers = {"rules (persist's regular expressions)": lambda: lb.predict_refusal([h[0] for h in held], "rules"),
               "garak MitigationBypass": lambda: [mitigation_label(lab.answer, subs) for lab, _ in held],
               **({} if args.tiny else {"learned read-out (the default)":
                                         lambda: lb.predict_refusal([h[0] for h in held], "learned")})}
    for spec in args.judge:
        readers[f"judge {spec}"] = lambda spec=spec: lb.predict_refusal([h[0] for h in held], f"judge:{spec}")
    table = []
    for name, predict in readers.items():
        pred = predict()
        a = lb.agreement(gold, pred, lb.REFUSAL_LABELS)
        tp = sum(p == g == "refusal" for p, g in zip(pred, gold))
        flagged, true = sum(p == "refusal" for p in pred), sum(g == "refusal" for g in gold)
        precision = wilson_ci(tp, flagged) if flagged else None
        recall = wilson_ci(tp, true)
        table.append([name, fmt(precision) if precision else "– (never flags)", fmt(recall), fmt(a.accuracy),
                      fmt(a.kappa)])
        print(f"{name}: precision {table[-1][1]}, recall {table[-1][2]}, accuracy {table[-1][3]}, kappa "
              f"{table[-1][4]}")
    print()
    print("| reader | precision (refusal) | recall (refusal) | accuracy (3-way) | Cohen's kappa |")
    print("| --- | --- | --- | --- | --- |")
    for row in table:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
