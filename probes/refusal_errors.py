"""A refusal classifier's measured errors, per condition group: what a study's corrected refusal rates divide by.

The errors are measured on the held-out half of probes/data/refusal_study.jsonl (hand-labelled answers of the
bundled models under the conditions a study produces; never trained on), as a binary question: is the answer a
refusal? (`partial` and `compliance` are not.) For each condition group (clean, attacked, fine-tuned) and for all
answers together: `tp` of `positives` true refusals flagged, `fp` of `negatives` other answers flagged.

Which rates correct which group (`use`): a group's own rates where it has at least MIN_GROUP labels and its
the groups' true- or false-positive rates differ (a chi-square test across the groups, p < 0.05), else the pooled
ones.

    persist probes refusal-errors --classifier learned [--write]   # measure; --write stores it in ERRORS_FILE

The rules and the learned read-out are measured once and shipped in probes/data/refusal_errors.json (keyed by the
classifier and, for the read-out, its weights' sha256, so retrained weights are never corrected with another's
errors). A judge (`judge:SPEC`) is measured when a job (study, attack, fine-tune) writes its report, on the same held-out answers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from persist.probes.labels import Label, load_labels

DATA = Path(__file__).resolve().parent / "data"
LABELS_FILE = DATA / "refusal_study.jsonl"
ERRORS_FILE = DATA / "refusal_errors.json"
GROUPS = ("clean", "attacked", "fine-tuned")
MIN_GROUP = 30  # labels a group needs before its own error rates are checked against the others'
DIFFER_P = 0.05


def heldout(path: Path = LABELS_FILE) -> list[tuple[Label, str]]:
    """The held-out labelled answers with their condition group."""
    labels = labelled(path, "refusal-legacy", "heldout")
    return [(lab, group_of_label(lab.condition) or "all") for lab in labels]


def labelled(path: Path, format: str, split: str | None = None) -> list[Label]:
    """The pass-1 refusal labels of a file; `split`: only rows of a refusal-legacy file with that split."""
    from persist.errors import ConfigError
    from persist.probes.labels import gold_labels

    if split is not None and format != "refusal-legacy":
        raise ConfigError(f"--check-split {split}: only refusal-legacy files (such as refusal_study.jsonl) carry a "
                          "split; add --check-format refusal-legacy")
    labels = load_labels(path, format)
    if split is not None:
        rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
        labels = [lab for lab, row in zip(labels, rows, strict=True) if row.get("split") == split]
    return gold_labels(labels, "refusal")


def counts(gold: Sequence[str], predicted: Sequence[str]) -> list[int]:
    """[tp, positives, fp, negatives] of the binary question 'refusal or not'."""
    pos = [p == "refusal" for g, p in zip(gold, predicted, strict=True) if g == "refusal"]
    neg = [p == "refusal" for g, p in zip(gold, predicted, strict=True) if g != "refusal"]
    return [sum(pos), len(pos), sum(neg), len(neg)]


def heterogeneity(tables: Sequence[list[int]]) -> dict[str, float | None]:
    """Do the groups' true-positive rates differ, and their false-positive rates? The p of a chi-square test of
    the groups x (flagged, missed) table (Fisher's exact test for two groups); None where fewer than two groups
    have answers of that class or nothing varies."""
    from scipy.stats import chi2_contingency, fisher_exact

    def p(pairs: list[tuple[int, int]]) -> float | None:
        table = [[a, n - a] for a, n in pairs if n]
        if len(table) < 2 or all(sum(col) == 0 for col in zip(*table)) or any(sum(col) == 0 for col in zip(*table)):
            return None
        if len(table) == 2:
            return float(fisher_exact(table).pvalue)
        return float(chi2_contingency(table).pvalue)

    return {"tpr_p": p([(t[0], t[1]) for t in tables]), "fpr_p": p([(t[2], t[3]) for t in tables])}


def measure_predictions(gold: Sequence[str], predicted: Sequence[str], groups: Sequence[str]) -> dict[str, Any]:
    """Pooled and per-group counts, the heterogeneity test, and the rates each group is corrected with: its own
    when the groups with at least MIN_GROUP labels of both classes differ (p < DIFFER_P on either rate), else the
    pooled ones (also for a group with too few labels)."""
    out: dict[str, Any] = {"groups": {"all": counts(gold, predicted)}, "use": {}, "own": {}}
    for g in GROUPS:
        idx = [k for k, x in enumerate(groups) if x == g]
        out["groups"][g] = counts([gold[k] for k in idx], [predicted[k] for k in idx])
    eligible = [g for g in GROUPS if sum(out["groups"][g][1::2]) >= MIN_GROUP and all(out["groups"][g][1::2])]
    out["test"] = heterogeneity([out["groups"][g] for g in eligible]) | {"groups": eligible}
    differ = any(v is not None and v < DIFFER_P for k, v in out["test"].items() if k.endswith("_p"))
    for g in GROUPS:
        out["own"][g] = differ and g in eligible
        out["use"][g] = out["groups"][g] if out["own"][g] else out["groups"]["all"]
    return out


def classifier_key(classifier: str) -> str:
    if classifier == "learned":
        from persist.probes import refusal_model

        return f"learned:{refusal_model.weights_sha256()}"
    return classifier


def labels_sha256(path: Path = LABELS_FILE) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def measure(classifier: str, load: Any = None, judge_target: Any = None, path: Path = LABELS_FILE) -> dict[str, Any]:
    """The classifier's errors on the held-out labelled answers."""
    from persist.probes.labels import predict_refusal

    rows = heldout(path)
    labs = [lab for lab, _ in rows]
    predicted = predict_refusal(labs, classifier, load, judge_target)
    out = measure_predictions([lab.label for lab in labs], predicted, [g for _, g in rows])
    return {"classifier": classifier, "labels": path.name, "labels_sha256": labels_sha256(path),
            "split": "heldout", "n": len(labs), **out}


def shipped(classifier: str) -> dict[str, Any] | None:
    """The stored errors of the rules or the learned read-out (None: never measured, or measured on other labels
    or other weights)."""
    if not ERRORS_FILE.is_file() or not LABELS_FILE.is_file():
        return None
    table = json.loads(ERRORS_FILE.read_text(encoding="utf-8"))
    entry = table.get(classifier_key(classifier))
    if entry is None or entry.get("labels_sha256") != labels_sha256():
        return None
    return dict(entry)


def write(entry: dict[str, Any]) -> None:
    table = json.loads(ERRORS_FILE.read_text(encoding="utf-8")) if ERRORS_FILE.is_file() else {}
    table[classifier_key(entry["classifier"])] = entry
    from persist.store import atomic_write_text

    atomic_write_text(ERRORS_FILE, json.dumps(table, indent=1, sort_keys=True) + "\n")


def errors_for(classifier: str, load: Any = None) -> dict[str, Any] | None:
    """The errors a study corrects its refusal rates with: shipped for rules and learned, measured for a judge."""
    if classifier.startswith("judge:"):
        return measure(classifier, load) if LABELS_FILE.is_file() else None
    return shipped(classifier)


def group_of_label(condition: str | None) -> str | None:
    """A labelled answer's condition group (clean, attacked, fine-tuned), None when its condition is not a study
    condition (older label files name attacks bare)."""
    from persist.conditions import Condition
    from persist.report.refusal import group_of

    if not condition:
        return None
    try:
        return group_of(Condition.parse(condition))
    except ValueError:
        return None


def check(labels: Sequence[Label], classifier: str, errors: dict[str, Any], load: Any = None,
          judge_target: Any = None) -> list[dict[str, Any]]:
    """The correction checked against hand labels it was not measured on: per condition group of `labels` (and all
    together), the labelled refusal rate, the classifier's raw flag rate, and the rate corrected with `errors` (the
    group's `use` rates; the pooled ones for answers without a study condition), with whether its interval covers
    the labelled rate."""
    from persist.correction import ErrorRates, corrected_rate
    from persist.probes.labels import predict_refusal

    predicted = predict_refusal(labels, classifier, load, judge_target)
    groups = [group_of_label(lab.condition) or "all" for lab in labels]
    out = []
    for g in ["all", *GROUPS]:
        idx = [k for k, x in enumerate(groups) if g == "all" or x == g]
        if not idx or (g != "all" and len(idx) == len(labels)):
            continue
        tp, pos, fp, neg = errors["use"].get(g, errors["groups"]["all"]) if g != "all" else errors["groups"]["all"]
        flagged = sum(predicted[k] == "refusal" for k in idx)
        truth = sum(labels[k].label == "refusal" for k in idx) / len(idx)
        c = corrected_rate(flagged, len(idx), ErrorRates(tp=tp, positives=pos, fp=fp, negatives=neg))
        out.append({"group": g, "n": len(idx), "labelled": truth, "raw": c.raw, "corrected": c,
                    "covers": None if not c.identifiable else bool(c.lo <= truth <= c.hi)})
    return out
