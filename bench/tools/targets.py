"""Measure the HF target on a real model: load times, log-likelihood and generation throughput, peak RSS.

    python bench/targets.py [--model smollm2-135m-instruct]

Prints a markdown table. Run it on a quiet machine: a second busy process halves the figures.
"""

from __future__ import annotations

import argparse
import resource
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--requests", type=int, default=32)
    args = ap.parse_args()

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
        for bs in (1, 8, 16):
            chats = [r[0] for r in reqs[:bs]]
            cfg = GenerationConfig(max_new_tokens=32)
            target.max_batch = bs
            t0 = time.perf_counter()
            target.generate(chats, cfg)
            dt = time.perf_counter() - t0
            rows.append(f"| greedy generation, batch {bs}, 32 new tokens ({dtype}) | {bs * 32 / dt:.1f} tok/s |")
        del model, target
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows.append(f"| peak RSS | {rss:.0f} MB |")
    print("| what | figure |\n| --- | --- |\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
