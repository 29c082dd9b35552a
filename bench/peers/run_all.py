"""Run every peer comparison one after the other and write BENCHMARKS.md from their figures.

    make bench          # = .venv/bin/python bench/run_all.py --bench-python .venv-bench/bin/python

Each comparison is its own script (bench/scoring.py, generation.py, roofline.py, finetune.py) run in a child
process with --json; this file only sequences them (2 cores: never two at once), prints the summary table and
writes BENCHMARKS.md (date, machine, versions, commands, table). Nothing in BENCHMARKS.md is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def versions(python: str) -> dict[str, str]:
    code = ("import json\nfrom importlib.metadata import version, PackageNotFoundError\nout = {}\n"
            "for p in ['torch', 'transformers', 'peft', 'accelerate', 'lm_eval', 'garak', 'trl']:\n"
            "    try: out[p] = version(p)\n    except PackageNotFoundError: out[p] = 'absent'\nprint(json.dumps(out))")
    return json.loads(subprocess.check_output([python, "-c", code], text=True))


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} logical cores, {mem:.0f} GiB RAM, {platform.system()} {platform.release()}"


def profile_tables(prof: dict) -> list[str]:
    out = []
    for name, r in prof.items():
        out += [f"**{name.replace('_', ' ')}** ({r['seconds_unprofiled']:.1f} s unprofiled)", "",
                "| operator | share of self CPU time | calls |", "| --- | ---: | ---: |"]
        out += [f"| `{op['op']}` | {op['share']:.1%} | {op['calls']} |" for op in r["top"]]
        out.append("")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench-python", default=str(ROOT / ".venv-bench" / "bin" / "python"))
    ap.add_argument("--items", type=int, default=160, help="probe items for the scoring comparison")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--steps", type=int, default=12, help="training steps for the fine-tuning comparison")
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    args = ap.parse_args()
    py = sys.executable
    tmp = Path(tempfile.mkdtemp(prefix="persist-bench-"))
    jobs = {
        "scoring": [py, "bench/scoring.py", "--items", str(args.items), "--lm-eval-python", args.bench_python],
        "scoring_bf16": [py, "bench/scoring.py", "--items", str(args.items), "--dtype", "bfloat16",
                         "--lm-eval-python", args.bench_python],
        "generation": [py, "bench/generation.py", "--prompts", str(args.prompts), "--max-new-tokens",
                       str(args.max_new_tokens)],
        "generation_bf16": [py, "bench/generation.py", "--prompts", str(args.prompts), "--max-new-tokens",
                            str(args.max_new_tokens), "--dtype", "bfloat16"],
        "roofline": [py, "bench/roofline.py"],
        "profile": [py, "bench/where_time_goes.py"],
        "finetune": [py, "bench/finetune.py", "--steps", str(args.steps), "--trl-python", args.bench_python],
    }
    res, commands, walls = {}, {}, {}
    for name, cmd in jobs.items():
        out = tmp / f"{name}.json"
        commands[name] = " ".join(os.path.relpath(c, ROOT) if c in (py, args.bench_python) else c for c in cmd)
        print(f"== {name}: {' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        subprocess.run([*cmd, "--json", str(out)], cwd=ROOT, check=True)
        walls[name] = time.perf_counter() - t0
        res[name] = json.loads(out.read_text())

    s, g, r, f = res["scoring"], res["generation"], res["roofline"], res["finetune"]
    s16, g16 = res["scoring_bf16"], res["generation_bf16"]
    # In fp32 both engines give the same texts; in bf16 each drifts from that reference by rounding.
    ref = g["persist_outputs"]
    g16["persist_same_as_fp32"] = sum(a == b for a, b in zip(g16["persist_outputs"], ref, strict=True))
    g16["garak_same_as_fp32"] = sum(a == b for a, b in zip(g16["garak_outputs"], ref, strict=True))
    rows = [
        ("Scoring (likelihood, fp32)", f"{s['persist_tok_s']:.0f} tok/s", f"lm-eval hf: {s['lm_eval_tok_s']:.0f} tok/s",
         s["ratio"], ">= 2x", f"max per-request diff {s['max_abs_diff_nats']:.1e} nats over {s['requests']} requests"),
        ("Scoring (likelihood, bf16)", f"{s16['persist_tok_s']:.0f} tok/s",
         f"lm-eval hf: {s16['lm_eval_tok_s']:.0f} tok/s", s16["ratio"], "(bf16 row)",
         f"max per-request diff {s16['max_abs_diff_nats']:.2f} nats (bf16 rounding; mean "
         f"{s16['mean_abs_diff_nats']:.2f})"),
        ("Generation (greedy, fp32)", f"{g['persist_attempts_per_second']:.2f} attempts/s",
         f"garak huggingface: {g['garak_attempts_per_second']:.2f} attempts/s", g["ratio"], ">= 5x",
         f"identical outputs {g['identical']}/{g['n']}"),
        ("Generation (greedy, bf16)", f"{g16['persist_attempts_per_second']:.2f} attempts/s",
         f"garak huggingface: {g16['garak_attempts_per_second']:.2f} attempts/s", g16["ratio"], ">= 5x",
         f"identical outputs {g16['identical']}/{g16['n']}; same as the fp32 text: persist "
         f"{g16['persist_same_as_fp32']}/{g16['n']}, garak {g16['garak_same_as_fp32']}/{g16['n']} (bf16 rounding)"),
        ("Compute use (scoring, bf16)", f"{r['bfloat16']['achieved_gflops']:.1f} GFLOP/s",
         f"matmul peak {r['bfloat16']['peak_gflops']:.0f} GFLOP/s", r["bfloat16"]["fraction"], ">= 50%",
         f"fp32: {r['float32']['achieved_gflops']:.1f} of {r['float32']['peak_gflops']:.0f} GFLOP/s "
         f"({r['float32']['fraction']:.0%})"),
        ("Fine-tuning (LoRA, fp32)", f"{f['persist']['tokens_per_second']:.0f} tok/s",
         f"TRL SFTTrainer: {f['trl']['tokens_per_second']:.0f} tok/s", f["ratio"], ">= 1.3x",
         f"last loss {f['persist']['last_loss']:.3f} vs {f['trl']['last_loss']:.3f} after {f['steps']} steps"),
    ]
    table = ["| comparison | persist | peer | ratio | goal | same answers? |", "| --- | --- | --- | --- | --- | --- |"]
    for name, ours, peer, ratio, goal, agree in rows:
        shown = f"{ratio:.0%}" if goal.endswith("%") else f"{ratio:.2f}x"
        table.append(f"| {name} | {ours} | {peer} | {shown} | {goal} | {agree} |")
    v = versions(args.bench_python)
    doc = [
        "# Benchmarks", "",
        f"Written by `make bench` (bench/run_all.py) on {time.strftime('%Y-%m-%d %H:%M %Z')}. Do not edit by hand.", "",
        f"- Machine: {machine()}", f"- Python {platform.python_version()}; " + ", ".join(f"{k} {x}" for k, x in v.items()),
        "- Model: SmolLM2-135M-Instruct (bundled, GGUF dequantised to fp32 safetensors), CPU, both engines on the same "
        "folder and dtype, each in its own process, one after the other.", "",
        *table, "",
        "Commands (run from the repository root; `make bench` runs them all):", "",
        *[f"- {k} ({walls[k]:.0f} s): `{c}`" for k, c in commands.items()], "",
        "## Where the time goes (torch profiler, bench/where_time_goes.py)", "",
        *profile_tables(res["profile"]), "",
        "Details: each script's docstring says exactly what is compared. Raw figures:", "",
        "```json", json.dumps(res, indent=1), "```", "",
    ]
    Path(args.out).write_text("\n".join(doc), encoding="utf-8")
    print("\n".join(table))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
