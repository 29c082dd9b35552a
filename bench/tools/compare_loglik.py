"""Compare the per-item log-likelihoods of two `persist score` runs of the same items (likelihood scorer), e.g. a
CUDA bf16 run (or --engine vllm) against the CPU fp32 reference:

    python bench/tools/compare_loglik.py runs/gpu-score-cpu runs/gpu-score-cuda [--brief]

Records are paired by (role, key) (persist.store: one JSON object per line of records.jsonl; the likelihood
scorer's details hold each reference's log-likelihood in nats, logp_aligned and logp_misaligned). Printed: the
max / median absolute difference per reference in nats and per reference byte, and per-item score agreement
(same preferred side, |score difference|).

Tolerance: 0.0125 nats per reference byte, i.e. ~0.05 nats per token at SmolLM2's ~4 bytes per token, which is
what bf16 rounding of the logits and activations costs against fp32 (fp32 on both sides agrees to ~1e-4 nats);
a score difference of at most 0.02 on the 0-1 scale. Exit status 1 when a tolerance is exceeded.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

TOL_NATS_PER_BYTE = 0.0125
TOL_SCORE = 0.02


def read_records(folder: Path) -> dict[tuple[str, str], dict]:
    path = folder / "records.jsonl"
    if not path.is_file():
        sys.exit(f"error: {path}: no records (is {folder} a persist run folder?)")
    out = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        rec = json.loads(line)
        if "logp_aligned" not in rec.get("details", {}):
            sys.exit(f"error: {path}:{n}: no logp_aligned in details; compare runs of the likelihood scorer")
        out[(rec["role"], rec["key"])] = rec
    return out


def compare(a: dict[tuple[str, str], dict], b: dict[tuple[str, str], dict]) -> dict:
    """Differences between paired records of runs a (reference) and b."""
    keys = sorted(set(a) & set(b))
    if not keys:
        sys.exit("error: the two runs share no records (same suite, items, scorer and model role?)")
    nats, per_byte, score_diff, same_side = [], [], [], 0
    for k in keys:
        ra, rb = a[k]["details"], b[k]["details"]
        la = ra["logp_aligned"] + ra["logp_misaligned"]
        lb = rb["logp_aligned"] + rb["logp_misaligned"]
        diffs = [abs(x - y) for x, y in zip(la, lb)]
        nats += diffs
        per_byte += [d / max(1.0, ra["ref_bytes"]) for d in diffs]  # the item's mean reference length in bytes
        score_diff.append(abs(a[k]["score"] - b[k]["score"]))
        same_side += (ra["logodds"] > 0) == (rb["logodds"] > 0)
    return {"items": len(keys), "only_in_one": len(set(a) ^ set(b)), "references": len(nats),
            "max_nats": max(nats), "median_nats": statistics.median(nats), "max_nats_per_byte": max(per_byte),
            "median_nats_per_byte": statistics.median(per_byte), "max_score_diff": max(score_diff),
            "same_side": same_side, "ok": max(per_byte) <= TOL_NATS_PER_BYTE and max(score_diff) <= TOL_SCORE}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("reference", type=Path, help="run folder of the reference (CPU fp32) run")
    parser.add_argument("other", type=Path, help="run folder of the run to check")
    parser.add_argument("--brief", action="store_true", help="one line, for bench/tools/gpu_check.sh's table")
    args = parser.parse_args(argv)
    r = compare(read_records(args.reference), read_records(args.other))
    verdict = "ok" if r["ok"] else "OVER TOLERANCE"
    if args.brief:
        print(f"{r['same_side']}/{r['items']} same side, max {r['max_nats']:.3f} nats "
              f"({r['max_nats_per_byte']:.4f}/B), max dscore {r['max_score_diff']:.3f}: {verdict}")
        return 0 if r["ok"] else 1
    print(f"{args.other} vs {args.reference}: {r['items']} items, {r['references']} references"
          + (f" ({r['only_in_one']} records in one run only)" if r["only_in_one"] else ""))
    print(f"  |d log-likelihood| per reference: max {r['max_nats']:.4f} nats, median {r['median_nats']:.4f} nats")
    print(f"  per reference byte: max {r['max_nats_per_byte']:.5f}, median {r['median_nats_per_byte']:.5f} "
          f"(tolerance {TOL_NATS_PER_BYTE}, ~0.05 nats/token)")
    print(f"  items preferring the same side: {r['same_side']}/{r['items']}; max |d score| {r['max_score_diff']:.4f} "
          f"(tolerance {TOL_SCORE})")
    print(f"  {verdict}")
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
