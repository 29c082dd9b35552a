"""persist's likelihood scoring vs lm-eval-harness's `hf` backend on the same contrastive items.

    make bench                                   # or, with the bench venv built:
    .venv/bin/python bench/peers/scoring.py --items 160 [--json out.json]
    .venv/bin/python bench/peers/scoring.py --tiny   # persist's side only, on the tiny random model (smoke test)

The probe items (suite `traits`, the first N of `select()`, clean) are exported as an lm-eval multiple-choice
task: context = the conversation rendered with SmolLM2's chat template (exactly the prompt persist scores),
choices = [aligned reference, misaligned reference], target_delimiter "". lm-eval runs in its own child process
from the bench venv (.venv-bench: lm-eval installed beside persist, never in the project venv), with
`HFLM(pretrained=<same safetensors folder>, dtype=float32, batch_size=B)`; only its `loglikelihood` call is
timed (wrapped inside simple_evaluate), so task building and dataset loading are not charged to it.

Same answers: lm-eval moves the context's trailing whitespace (the "\n" after "<|im_start|>assistant") into
the continuation, so its numbers are log p("\n" + reference | context without "\n"). To compare like with like,
persist's engine is also run on exactly lm-eval's token split (HFTarget.loglikelihood_tokens) and the per-request
log-likelihoods are compared (goal: max |diff| <= 1e-3 nats in fp32). The speed figure for persist is its real
scoring path, `HFTarget.loglikelihood(requests)` as `persist score` calls it; tokens/s for both = all tokens of
all (context, continuation) requests / seconds of the timed call.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODEL = "smollm2-135m-instruct"

TASK_YAML = """task: persist_traits
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: context
doc_to_choice: choices
doc_to_target: gold
target_delimiter: ""
metric_list:
  - metric: acc
"""

LM_EVAL = r"""
import json, sys, time
from lm_eval import simple_evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
args = json.loads(sys.argv[1])
lm = HFLM(pretrained=args["model"], dtype=args["dtype"], batch_size=args["batch_size"], device="cpu")
timed = {}
orig = lm.loglikelihood
def loglikelihood(requests, **kw):
    t0 = time.perf_counter()
    out = orig(requests, **kw)
    timed["seconds"] = time.perf_counter() - t0
    timed["requests"] = len(requests)
    return out
lm.loglikelihood = loglikelihood
res = simple_evaluate(model=lm, tasks=["persist_traits"], task_manager=TaskManager(include_path=args["tasks"]),
                      log_samples=True, bootstrap_iters=0, random_seed=0, numpy_random_seed=0, torch_random_seed=0)
ll = {}
for s in res["samples"]["persist_traits"]:
    ll[s["doc_id"]] = [r[0][0] for r in s["resps"]]
print(json.dumps({**timed, "ll": ll, "acc": res["results"]["persist_traits"]["acc,none"]}))
"""


def lm_eval_split(tok, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's HFLM._encode_pair: trailing whitespace of the context joins the continuation."""
    n = len(context) - len(context.rstrip())
    if n:
        continuation, context = context[-n:] + continuation, context[:-n]
    whole = tok(context + continuation, add_special_tokens=False)["input_ids"]
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    return ctx, whole[len(ctx):]


def run_lm_eval(python: str, model: str, dtype: str, batch_size: int, tasks: Path) -> dict:
    args = json.dumps({"model": model, "dtype": dtype, "batch_size": batch_size, "tasks": str(tasks)})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([python, "-c", LM_EVAL, args], stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"lm-eval failed:\n{err.read()[-4000:]}")
        res = json.loads(out.read().strip().splitlines()[-1])
    res["peak_rss_mb"] = usage.ru_maxrss / 1024
    return res


def work_ratio(cfg, ours: list, theirs: list) -> dict:
    """Matmul FLOPs each engine must do (2 x weights touched per token; attention ignored, it is small here).

    lm-eval: every request's context + continuation through the body, and the vocabulary projection at every
    position (it takes log_softmax over the whole sequence). persist: each distinct prompt once plus every
    continuation (minus its last token) through the body, and the projection only where a token is scored."""
    h, v, n_layers = cfg.hidden_size, cfg.vocab_size, cfg.num_hidden_layers
    kv = cfg.num_key_value_heads * (getattr(cfg, "head_dim", None) or h // cfg.num_attention_heads)
    body = 2 * n_layers * (2 * h * h + 2 * h * kv + 3 * h * cfg.intermediate_size)
    head = 2 * h * v
    them = sum(len(p) + len(c) for p, c in theirs) * (body + head)
    prompts = {tuple(p) for p, _ in ours}
    us = (sum(len(p) for p in prompts) + sum(len(c) - 1 for _, c in ours)) * body + sum(len(c) for _, c in ours) * head
    return {"lm_eval_tflop": them / 1e12, "persist_tflop": us / 1e12, "work_ratio": them / us}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=160)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--batch-size", type=int, default=16, help="lm-eval's fixed batch size")
    ap.add_argument("--lm-eval-python", default=str(ROOT / ".venv-bench" / "bin" / "python"))
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--tiny", action="store_true",
                    help="the tiny random model, 1 item, persist's side only (no lm-eval): bench/tiny.py")
    args = ap.parse_args(argv)

    import resource

    from persist import models, plugins
    from persist.runner import clean_variant
    from persist.scoring import prompt_chat
    from persist.suites import get_suite, select
    from persist.targets.hf import HFTarget

    plugins.load()
    if args.tiny:
        from bench import tiny

        model_name, n_items = tiny.MODEL, 1
    else:
        model_name, n_items = MODEL, args.items
    resolved = models.resolve(model_name)
    folder = str(models.merged_folder(resolved))
    model, tok = models.load(resolved, models.LoadOptions(dtype=args.dtype))
    target = HFTarget(model, tok)
    items = select(get_suite("traits").load(), n_items)
    chats = [prompt_chat(clean_variant(it)) for it in items]
    requests = [(c, ref) for c, it in zip(chats, items, strict=True) for ref in (*it.aligned, *it.misaligned)]
    contexts = [target.render(c) for c in chats]
    split = [lm_eval_split(tok, ctx, ref) for ctx, it in zip(contexts, items, strict=True)
             for ref in (*it.aligned, *it.misaligned)]
    n_tokens = sum(len(p) + len(c) for p, c in split)
    work = work_ratio(model.config, [target.encode_pair(c, r) for c, r in requests], split)

    target.loglikelihood(requests[:4])  # warm-up
    target._prompt_cache.clear()
    t0 = time.perf_counter()
    target.loglikelihood(requests)
    ours_s = time.perf_counter() - t0
    ours_ll = target.loglikelihood_tokens(split)
    ours_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    del model, target
    res = {"items": len(items), "requests": len(requests), "tokens": n_tokens, "dtype": args.dtype,
           "persist_seconds": ours_s, "persist_tok_s": n_tokens / ours_s, "persist_rss_mb": ours_rss}
    print(f"| engine | requests | tokens | seconds | tokens/s | peak RSS MB |\n| --- | --- | --- | --- | --- | --- |\n"
          f"| persist | {len(requests)} | {n_tokens} | {ours_s:.1f} | {res['persist_tok_s']:.0f} | {ours_rss:.0f} |")
    if args.tiny:  # persist's side only: lm-eval lives in .venv-bench
        res["persist_ll"] = ours_ll
    else:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp, "items.jsonl")
            with data.open("w", encoding="utf-8") as f:
                for ctx, it in zip(contexts, items, strict=True):
                    f.write(json.dumps({"context": ctx, "choices": [*it.aligned, *it.misaligned], "gold": 0}) + "\n")
            Path(tmp, "persist_traits.yaml").write_text(TASK_YAML.format(data=data), encoding="utf-8")
            theirs = run_lm_eval(args.lm_eval_python, folder, args.dtype, args.batch_size, Path(tmp))
        their_ll = [x for d in range(len(items)) for x in theirs["ll"][str(d)]]
        diffs = [abs(a - b) for a, b in zip(ours_ll, their_ll, strict=True)]
        res.update({"lm_eval_seconds": theirs["seconds"], "lm_eval_tok_s": n_tokens / theirs["seconds"],
                    "lm_eval_rss_mb": theirs["peak_rss_mb"], "lm_eval_batch_size": args.batch_size,
                    "ratio": theirs["seconds"] / ours_s, "max_abs_diff_nats": max(diffs),
                    "mean_abs_diff_nats": sum(diffs) / len(diffs), "lm_eval_acc": theirs["acc"]})
        print(f"| lm-eval hf (batch {args.batch_size}) | {len(requests)} | {n_tokens} | {theirs['seconds']:.1f} | "
              f"{res['lm_eval_tok_s']:.0f} | {theirs['peak_rss_mb']:.0f} |")
        print(f"ratio persist/lm-eval tokens/s: {res['ratio']:.2f}; per-request |diff| max "
              f"{res['max_abs_diff_nats']:.2e} mean {res['mean_abs_diff_nats']:.2e} nats")
    res.update(work)
    print(f"matmul work: lm-eval {work['lm_eval_tflop']:.1f} TFLOP, persist {work['persist_tflop']:.1f} TFLOP -> "
          f"at equal FLOP/s persist would be {work['work_ratio']:.2f}x faster")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # bench.* (tiny mode)
    sys.exit(main())
