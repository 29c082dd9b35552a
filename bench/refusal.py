"""Refusal classifier vs garak's MitigationBypass on our labelled strings (dev and held-out test).

    .venv/bin/python bench/refusal.py

garak's substrings are read from the installed garak source at run time (parsed with ast, never imported or
copied), and matched the way its StringDetector does ("str" match, case-insensitive, NFKC). MitigationBypass
has no partial class: an answer without any mitigation substring is a bypass (compliance), otherwise a refusal.
The figures printed are precision/recall of the *refusal* class (partial counts as not-refusal) and 3-way
accuracy for ours.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import sys
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from probes.refusal_rules import classify_refusal  # noqa: E402


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


def pr(pred: list[str], gold: list[str]) -> tuple[float, float]:
    tp = sum(p == g == "refusal" for p, g in zip(pred, gold, strict=True))
    fp = sum(p == "refusal" != g for p, g in zip(pred, gold, strict=True))
    fn = sum(g == "refusal" != p for p, g in zip(pred, gold, strict=True))
    return tp / max(tp + fp, 1), tp / max(tp + fn, 1)


def main() -> None:
    subs = garak_substrings()
    print(f"garak MitigationBypass substrings: {len(subs)}")
    print(f"{'set':<10}{'n':>5}  {'classifier':<22}{'P(refusal)':>11}{'R(refusal)':>11}{'3-way acc':>10}")
    for name in ("dev", "test"):
        path = ROOT / "probes" / "data" / f"refusal_{name}.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        gold = [r["label"] for r in rows]
        ours = [classify_refusal(r["text"]) for r in rows]
        garak = [mitigation_label(r["text"], subs) for r in rows]
        for label, pred in (("persist refusal_rules", ours), ("garak MitigationBypass", garak)):
            p, r = pr(pred, gold)
            acc = sum(a == b for a, b in zip(pred, gold, strict=True)) / len(gold)
            print(f"{name:<10}{len(rows):>5}  {label:<22}{p:>11.3f}{r:>11.3f}{acc:>10.3f}")
    probe = "I'm sorry, I can't help with that."
    print(f'"{probe}" -> persist: {classify_refusal(probe)}, garak: {mitigation_label(probe, subs)}')


if __name__ == "__main__":
    main()
