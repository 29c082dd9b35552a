"""Refusal classifiers vs garak's MitigationBypass on our labelled strings.

    .venv/bin/python bench/tools/refusal.py
    .venv/bin/python bench/tools/refusal.py --tiny   # 6 rows a set, the tiny random model as encoder, fitted on the spot

First the real answers of the bundled SmolLM2 models (probes/data/refusal_real.jsonl, labelled by the rubric
probes/data/refusal_rubric.md): its held-out split is the fair figure. Then the written strings. Rows: persist's
learned classifier (probes/refusal_model.py), persist's regex rules and garak's MitigationBypass.

garak's substrings are read from the installed garak source at run time (parsed with ast, never imported or
copied), and matched the way its StringDetector does ("str" match, case-insensitive, NFKC). MitigationBypass
has no partial class: an answer without any mitigation substring is a bypass (compliance), otherwise a refusal.
The figures printed are precision/recall of the *refusal* class (partial counts as not-refusal) and 3-way
accuracy for ours.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import sys
import unicodedata
from contextlib import nullcontext
from pathlib import Path

from persist.probes import refusal_model
from persist.probes.refusal_rules import classify_refusal

ROOT = Path(__file__).resolve().parents[2]


def garak_substrings() -> list[str]:
    spec = importlib.util.find_spec("garak")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("garak is not installed: pip install -e '.[garak]'")
    src = Path(spec.submodule_search_locations[0], "detectors", "mitigation.py").read_text()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.ClassDef) and node.name == "MitigationBypass":
            for sub in ast.walk(node):
                if isinstance(sub, ast.Assign) and getattr(sub.targets[0], "id", "") == "substrings":
                    return [ast.literal_eval(e) for e in sub.value.elts]
    raise SystemExit("MitigationBypass.substrings not found in garak/detectors/mitigation.py")


def mitigation_label(text: str, subs: list[str]) -> str:
    t = unicodedata.normalize("NFKC", text).lower()
    return "refusal" if any(s.lower() in t for s in subs) else "compliance"


def confusion(pred: list[str], gold: list[str]) -> str:
    labels = refusal_model.LABELS
    rows = ["gold \\ predicted   " + "".join(f"{lab:>12}" for lab in labels)]
    for g in labels:
        counts = [sum(p == q and t == g for p, t in zip(pred, gold, strict=True)) for q in labels]
        rows.append(f"{g:<20}" + "".join(f"{c:>12}" for c in counts))
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="6 rows of each set, read by the tiny random model and "
                    "weights fitted on 12 written strings instead of the shipped classifier: bench/tiny.py")
    args = ap.parse_args(argv)
    from persist import plugins

    plugins.load()
    n = 6 if args.tiny else None
    if args.tiny:
        from bench import tiny

        m = refusal_model
        written = [r for name in m.TRAIN_FILES for r in m.read_labelled(m.DATA / name)]
        context = tiny.refusal_encoder(m, fit_on=written[::max(1, len(written) // 12)][:12])
    else:
        context = nullcontext()
    with context:
        report(n)
    return 0


def report(n: int | None) -> None:
    """Every row below; n: only the first n rows of each set."""
    subs = garak_substrings()
    print(f"garak MitigationBypass substrings: {len(subs)}")
    header = f"{'set':<22}{'n':>5}  {'classifier':<30}{'P(refusal)':>11}{'R(refusal)':>11}{'3-way acc':>10}"
    print("\nReal SmolLM2 answers (refusal_real.jsonl), labelled by the rubric; the held-out split was never trained on")
    print(header)
    for split in ("heldout", "train"):
        rows = refusal_model.real_answers(split)[:n]
        gold = [r["label"] for r in rows]
        learned = [lab for lab, _ in refusal_model.classify([r["text"] for r in rows], [r["request"] for r in rows])]
        seen = "(held out)" if split == "heldout" else "(trained on)"
        for label, pred in ((f"persist learned {seen}", learned),
                            ("persist rules", [classify_refusal(r["text"]) for r in rows]),
                            ("garak MitigationBypass", [mitigation_label(r["text"], subs) for r in rows])):
            p, r, acc = refusal_model.precision_recall(pred, gold)
            print(f"{'real ' + split:<22}{len(rows):>5}  {label:<30}{p:>11.3f}{r:>11.3f}{acc:>10.3f}")
        if split == "heldout":
            print("confusion of persist learned on real held-out:\n" + confusion(learned, gold))
    print("\nWritten strings (looking like model answers; secondary)")
    print(header)
    for name in (*refusal_model.TRAIN_FILES, refusal_model.HELDOUT_FILE):
        rows = refusal_model.read_labelled(refusal_model.DATA / name)[:n]
        gold = [r["label"] for r in rows]
        learned = [lab for lab, _ in refusal_model.classify([r["text"] for r in rows], [r["request"] for r in rows])]
        seen = "(trained on)" if name in refusal_model.TRAIN_FILES else "(held out)"
        for label, pred in ((f"persist learned {seen}", learned),
                            ("persist rules", [classify_refusal(r["text"]) for r in rows]),
                            ("garak MitigationBypass", [mitigation_label(r["text"], subs) for r in rows])):
            p, r, acc = refusal_model.precision_recall(pred, gold)
            print(f"{name.removeprefix('refusal_').removesuffix('.jsonl'):<22}{len(rows):>5}  {label:<30}"
                  f"{p:>11.3f}{r:>11.3f}{acc:>10.3f}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # bench.* (tiny mode)
    sys.exit(main())
