"""Measure the HF target on a real model: load times, log-likelihood and generation throughput, peak RSS.

    python bench/tools/targets.py [--model smollm2-135m-instruct]
    python bench/tools/targets.py --tiny     # the tiny random model, 2 requests, 4 new tokens (smoke test)

Prints a markdown table. Run it on a quiet machine: a second busy process halves the figures.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--tiny", action="store_true", help="the tiny random model, 2 requests, batches 1 and 2, "
                    "4 new tokens: bench/tiny.py")
    args = ap.parse_args(argv)
    new_tokens, batches = 32, (1, 8, 16)
    if args.tiny:
        from bench import tiny

        args.model, args.requests, new_tokens, batches = tiny.MODEL, min(args.requests, 2), 4, (1, 2)

    t0 = time.perf_counter()
    import torch  # noqa: F401

    from persist import models
    from persist.targets.base import GenerationConfig
    from persist.targets.hf import HFTarget

    t_import = time.perf_counter() - t0
    t0 = time.perf_counter()
    resolved = models.resolve(args.model)
    t_resolve = time.perf_counter() - t0
    rows = [f"| imports (torch, transformers) | {t_import:.2f} s |", f"| resolve (convert if first) | {t_resolve:.2f} s |"]
    # Requests: distinct prompts of ~64 tokens, each with a ~64-token continuation (no prompt sharing).
    words = "the patient asked whether the pain in the chest could wait until the morning or not".split()
    reqs = []
    for i in range(args.requests):
        prompt = " ".join(words[(i + j) % len(words)] for j in range(45)) + f" case {i}?"
        cont = " ".join(words[(2 * i + j) % len(words)] for j in range(50))
        reqs.append(([{"role": "user", "content": prompt}], cont))
    for dtype in ("float32", "bfloat16"):
        t0 = time.perf_counter()
        model, tok = models.load(resolved, models.LoadOptions(dtype=dtype))
        rows.append(f"| load weights + tokenizer ({dtype}) | {time.perf_counter() - t0:.2f} s |")
        target = HFTarget(model, tok)
        n_tokens = sum(len(p) + len(c) for p, c in (target.encode_pair(*r) for r in reqs))
        target.loglikelihood(reqs[:2])  # warm-up
        t0 = time.perf_counter()
        target.loglikelihood(reqs)
        dt = time.perf_counter() - t0
        rows.append(f"| log-likelihood {len(reqs)} x ~{n_tokens // len(reqs)} tok ({dtype}) | "
                    f"{n_tokens / dt:.0f} tok/s |")
        for bs in batches:
            chats = [r[0] for r in reqs[:bs]]
            cfg = GenerationConfig(max_new_tokens=new_tokens)
            target.max_batch = bs
            t0 = time.perf_counter()
            target.generate(chats, cfg)
            dt = time.perf_counter() - t0
            rows.append(f"| greedy generation, batch {bs}, {new_tokens} new tokens ({dtype}) | "
                        f"{bs * new_tokens / dt:.1f} tok/s |")
        del model, target
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows.append(f"| peak RSS | {rss:.0f} MB |")
    print("| what | figure |\n| --- | --- |\n" + "\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # bench.* (tiny mode)
    sys.exit(main())
