"""Compute use: persist's scoring forward as a fraction of this machine's measured matmul rate (roofline).

    .venv/bin/python bench/peers/roofline.py [--items 48] [--json out.json]
    .venv/bin/python bench/peers/roofline.py --tiny   # tiny random model, 1 item, small matmuls (smoke test)

Peak: the best of several square matmuls (n = 512 .. 2048) in the dtype, FLOPs = 2 n^3, all threads torch uses.
Achieved: `HFTarget.loglikelihood` on the clean `traits` items (aligned + misaligned references, persist's real
scoring path); its FLOPs are counted exactly by torch.utils.flop_counter.FlopCounterMode on one pass (matmuls,
attention), then a second pass without the counter is timed. Fraction = achieved FLOP/s / peak FLOP/s.
Reported for bfloat16 (the issue's goal) and float32 (the default on CPU).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODEL = "smollm2-135m-instruct"


def matmul_peak(dtype, reps: int = 5, sizes: tuple[int, ...] = (512, 1024, 2048)) -> tuple[float, int]:
    import torch

    best, best_n = 0.0, 0
    for n in sizes:
        a = torch.randn(n, n, dtype=dtype)
        b = torch.randn(n, n, dtype=dtype)
        a @ b  # warm-up
        for _ in range(reps):
            t0 = time.perf_counter()
            a @ b
            rate = 2 * n**3 / (time.perf_counter() - t0)
            if rate > best:
                best, best_n = rate, n
    return best, best_n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=48)
    ap.add_argument("--json")
    ap.add_argument("--tiny", action="store_true", help="the tiny random model, 1 item, 64-128 matmuls: bench/tiny.py")
    args = ap.parse_args(argv)

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from persist import models, plugins
    from persist.runner import clean_variant
    from persist.scoring import prompt_chat
    from persist.suites import get_suite, select
    from persist.targets.hf import HFTarget

    plugins.load()
    model_name, sizes = MODEL, (512, 1024, 2048)
    if args.tiny:
        from bench import tiny

        model_name, sizes, args.items = tiny.MODEL, (64, 128), 1
    items = select(get_suite("traits").load(), args.items)
    requests = [(prompt_chat(clean_variant(it)), ref) for it in items for ref in (*it.aligned, *it.misaligned)]
    resolved = models.resolve(model_name)
    res: dict = {"items": len(items), "requests": len(requests), "threads": torch.get_num_threads()}
    rows = []
    for name, dtype in (("bfloat16", torch.bfloat16), ("float32", torch.float32)):
        peak, n = matmul_peak(dtype, sizes=sizes)
        model, tok = models.load(resolved, models.LoadOptions(dtype=name))
        target = HFTarget(model, tok)
        tokens = sum(len(p) + len(c) for p, c in (target.encode_pair(*r) for r in requests))
        with FlopCounterMode(display=False) as counter:
            target.loglikelihood(requests)
        flops = counter.get_total_flops()
        t0 = time.perf_counter()
        target.loglikelihood(requests)
        seconds = time.perf_counter() - t0
        achieved = flops / seconds
        res[name] = {"peak_gflops": peak / 1e9, "peak_at_n": n, "flops": flops, "seconds": seconds,
                     "tokens": tokens, "tok_s": tokens / seconds, "achieved_gflops": achieved / 1e9,
                     "fraction": achieved / peak}
        rows.append(f"| {name} | {peak / 1e9:.1f} (n={n}) | {flops / 1e9:.1f} | {seconds:.2f} | {tokens / seconds:.0f} | "
                    f"{achieved / 1e9:.1f} | {achieved / peak:.0%} |")
        del model, target
    print("| dtype | peak matmul GFLOP/s | scoring GFLOP | seconds | tokens/s | achieved GFLOP/s | fraction |\n"
          "| --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # bench.* (tiny mode)
    sys.exit(main())
