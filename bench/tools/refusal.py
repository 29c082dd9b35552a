"""Refusal classifiers vs garak's MitigationBypass on our labelled strings.

    .venv/bin/python bench/refusal.py

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

import ast
import importlib.util
import sys
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from persist.probes import refusal_model  # noqa: E402
from persist.probes.refusal_rules import classify_refusal  # noqa: E402


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


def main() -> None:
    from persist import plugins

    plugins.load()
    subs = garak_substrings()
    print(f"garak MitigationBypass substrings: {len(subs)}")
    header = f"{'set':<22}{'n':>5}  {'classifier':<30}{'P(refusal)':>11}{'R(refusal)':>11}{'3-way acc':>10}"
    print("\nReal SmolLM2 answers (refusal_real.jsonl), labelled by the rubric; the held-out split was never trained on")
    print(header)
    for split in ("heldout", "train"):
        rows = refusal_model.real_answers(split)
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
        rows = refusal_model.read_labelled(refusal_model.DATA / name)
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
    main()
