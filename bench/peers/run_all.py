"""Run every peer comparison one after the other; write the raw figures to results.json and the summary to
BENCHMARKS.md.

    make bench          # = .venv/bin/python bench/peers/run_all.py --bench-python .venv-bench/bin/python
    .venv/bin/python bench/peers/run_all.py --render   # BENCHMARKS.md again from results.json, nothing rerun
    .venv/bin/python bench/peers/run_all.py --tiny --out DIR/B.md --results DIR/r.json   # the smoke test's mode

Each comparison is its own script beside this file (scoring.py, generation.py, roofline.py, where_time_goes.py,
finetune.py), run in a child process with --json; this file only sequences them (2 cores: never two at once).
bench/peers/results.json holds everything: date, machine, versions, commands, wall times and every figure the
scripts reported. BENCHMARKS.md is render(results.json): the summary table, the commands and the profiles.
Nothing in either file is typed by hand.

--tiny runs each script's --tiny mode in this process (the tiny random model, persist's side only: no peer runs)
and renders what it got, "-" where a peer's figure would be. Its figures measure nothing; it checks the pipeline.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RESULTS = HERE / "results.json"
MODEL_LINE = ("SmolLM2-135M-Instruct (bundled, GGUF dequantised to fp32 safetensors), CPU, both engines on the same "
              "folder and dtype, each in its own process, one after the other.")
TINY_MODEL_LINE = ("tiny-random (persist's random 2-layer Llama), --tiny: persist's side only, in one process; the "
                   "figures measure nothing.")


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


def jobs(py: str, bench_python: str, items: int, prompts: int, max_new_tokens: int, steps: int,
         server_bin: str | None = None, cost_checks: str | None = None) -> dict[str, list]:
    """name -> the command that produces its figures (run from the repository root, --json added)."""
    gen = ["--prompts", str(prompts), "--max-new-tokens", str(max_new_tokens)]
    server = ["--server-bin", server_bin] if server_bin else []
    return {
        "scoring": [py, "bench/peers/scoring.py", "--items", str(items), "--lm-eval-python", bench_python],
        "scoring_bf16": [py, "bench/peers/scoring.py", "--items", str(items), "--dtype", "bfloat16",
                         "--lm-eval-python", bench_python],
        "generation": [py, "bench/peers/generation.py", *gen],
        "generation_bf16": [py, "bench/peers/generation.py", *gen, "--dtype", "bfloat16"],
        "roofline": [py, "bench/peers/roofline.py"],
        "profile": [py, "bench/peers/where_time_goes.py"],
        "finetune": [py, "bench/peers/finetune.py", "--steps", str(steps), "--trl-python", bench_python],
        "engines": [py, "bench/peers/engines.py", *gen, *server],
        "cost": [py, "bench/peers/cost.py", *(["--checks", cost_checks] if cost_checks else [])],
    }


# ---------------------------------------------------------------- rendering: results.json -> BENCHMARKS.md


def fig(d: dict, path: str, spec: str, unit: str = "") -> str:
    """The figure at a dotted path of d, formatted; "-" where it is absent (a peer's figure under --tiny)."""
    for key in path.split("."):
        if not isinstance(d, dict) or key not in d:
            return "-"
        d = d[key]
    return format(d, spec) + unit


def same_as(figures: dict, engine: str) -> str:
    """How many of the bf16 run's texts of `engine` equal persist's fp32 texts (the fp32 reference)."""
    ref = figures.get("generation", {}).get("persist_outputs")
    outs = figures.get("generation_bf16", {}).get(f"{engine}_outputs")
    if ref is None or outs is None:
        return "-"
    return str(sum(a == b for a, b in zip(outs, ref, strict=True)))


def summary_table(figures: dict) -> list[str]:
    s, s16 = figures["scoring"], figures["scoring_bf16"]
    g, g16 = figures["generation"], figures["generation_bf16"]
    r, f = figures["roofline"], figures["finetune"]
    rows = [
        ("Scoring (likelihood, fp32)", fig(s, "persist_tok_s", ".0f", " tok/s"),
         "lm-eval hf: " + fig(s, "lm_eval_tok_s", ".0f", " tok/s"), fig(s, "ratio", ".2f", "x"), ">= 2x",
         f"max per-request diff {fig(s, 'max_abs_diff_nats', '.1e', ' nats')} over {s['requests']} requests"),
        ("Scoring (likelihood, bf16)", fig(s16, "persist_tok_s", ".0f", " tok/s"),
         "lm-eval hf: " + fig(s16, "lm_eval_tok_s", ".0f", " tok/s"), fig(s16, "ratio", ".2f", "x"), "(bf16 row)",
         f"max per-request diff {fig(s16, 'max_abs_diff_nats', '.2f', ' nats')} (bf16 rounding; mean "
         f"{fig(s16, 'mean_abs_diff_nats', '.2f')})"),
        ("Generation (greedy, fp32)", fig(g, "persist_attempts_per_second", ".2f", " attempts/s"),
         "garak huggingface: " + fig(g, "garak_attempts_per_second", ".2f", " attempts/s"),
         fig(g, "ratio", ".2f", "x"), ">= 5x", f"identical outputs {fig(g, 'identical', 'd')}/{g['n']}"),
        ("Generation (greedy, bf16)", fig(g16, "persist_attempts_per_second", ".2f", " attempts/s"),
         "garak huggingface: " + fig(g16, "garak_attempts_per_second", ".2f", " attempts/s"),
         fig(g16, "ratio", ".2f", "x"), ">= 5x",
         f"identical outputs {fig(g16, 'identical', 'd')}/{g16['n']}; same as the fp32 text: persist "
         f"{same_as(figures, 'persist')}/{g16['n']}, garak {same_as(figures, 'garak')}/{g16['n']} (bf16 rounding)"),
        ("Compute use (scoring, bf16)", fig(r, "bfloat16.achieved_gflops", ".1f", " GFLOP/s"),
         "matmul peak " + fig(r, "bfloat16.peak_gflops", ".0f", " GFLOP/s"), fig(r, "bfloat16.fraction", ".0%"),
         ">= 50%", f"fp32: {fig(r, 'float32.achieved_gflops', '.1f')} of {fig(r, 'float32.peak_gflops', '.0f')} "
         f"GFLOP/s ({fig(r, 'float32.fraction', '.0%')})"),
        ("Fine-tuning (LoRA, fp32)", fig(f, "persist.tokens_per_second", ".0f", " tok/s"),
         "TRL SFTTrainer: " + fig(f, "trl.tokens_per_second", ".0f", " tok/s"), fig(f, "ratio", ".2f", "x"),
         ">= 1.5x", f"same {fig(f, 'persist.tokens', 'd')} tokens in the same order; last loss "
         f"{fig(f, 'persist.last_loss', '.4f')} vs {fig(f, 'trl.last_loss', '.4f')} (rel. diff "
         f"{fig(f, 'last_loss_rel_diff', '.1e')}) after {f['steps']} steps"),
    ]
    table = ["| comparison | persist | peer | ratio | goal | same answers? |", "| --- | --- | --- | --- | --- | --- |"]
    table += [f"| {' | '.join(row)} |" for row in rows]
    return table


def profile_tables(prof: dict) -> list[str]:
    out = []
    for name, r in prof.items():
        out += [f"**{name.replace('_', ' ')}** ({r['seconds_unprofiled']:.1f} s unprofiled)", "",
                "| operator | share of self CPU time | calls |", "| --- | ---: | ---: |"]
        out += [f"| `{op['op']}` | {op['share']:.1%} | {op['calls']} |" for op in r["top"]]
        out.append("")
    return out


def engine_table(e: dict) -> list[str]:
    """The three-way generation race (bench/peers/engines.py), where the run has it."""
    if not e or "hf" not in e.get("engines", {}):
        return []
    rows = ["## Generation engines on a CPU (bench/peers/engines.py)", "",
            f"{e['n']} prompts (garak in-the-wild jailbreaks), greedy, {e['max_new_tokens']} new tokens at most, "
            f"{e['threads']} threads; the llama.cpp engines decode {e['parallel']} sequences together on the bundled "
            "Q4_1 GGUF, the HF engine runs the same weights dequantised to fp32.", "",
            "| engine | seconds | new tokens | new tokens/s | peak RSS MB |", "| --- | ---: | ---: | ---: | ---: |"]
    names = {"hf": "persist, HF engine (default)", "llamacpp": "persist, `--engine llamacpp`",
             "server": "llama.cpp's llama-server, parallel slots"}
    for k, r in e["engines"].items():
        rows.append(f"| {names.get(k, k)} | {r['seconds']:.1f} | {r['new_tokens']} | {r['tokens_per_second']:.1f} "
                    f"| {r['peak_rss_mb']:.0f} |")
    rows.append("")
    if "ratio_llamacpp_server" in e:
        rows.append(f"- `--engine llamacpp` / llama-server: {e['ratio_llamacpp_server']:.2f}x new tokens/s (goal: "
                    f">= 1x); identical texts {e['identical_llamacpp_server']}/{e['n']}; server: "
                    f"`{e['engines']['server'].get('version', '')}`")
    else:
        rows.append(f"- llama-server not run: {e.get('server_missing')}")
    rows.append(f"- `--engine llamacpp` / HF engine: {e['ratio_llamacpp_hf']:.2f}x new tokens/s; texts identical to "
                f"the HF engine's: {e['identical_llamacpp_hf']}/{e['n']} (4-bit weights against fp32)")
    rows.append(f"- per-token log-prob of the llama.cpp answers, llama.cpp (alone) vs HF fp32: mean |diff| "
                f"{e['logprob_abs_diff_mean']:.3f} nats, max {e['logprob_abs_diff_max']:.2f}, over "
                f"{e['logprob_tokens']} tokens")
    return [*rows, ""]


def dated(results: dict, name: str) -> str:
    """A job rerun on its own (--only) carries its own date."""
    when = results.get("dates", {}).get(name)
    return f"{when}, " if when and when != results["written"] else ""


def cost_table(c: dict) -> list[str]:
    """How a study's wall time grows (bench/peers/cost.py), where the run has it."""
    if not c or not c.get("designs"):
        return []

    def t(v: float | None, spec: str = ".0f") -> str:
        return "-" if v is None else format(v, spec)

    rows = ["## How a study's wall time grows (bench/peers/cost.py)", "",
            f"`persist study --profile quick --suite {c['suite']} --behaviour 2 --limit ITEMS --seeds SEEDS` (the "
            "default model and baseline), each design in its own process, one after the other. Seconds; the parts "
            "come from the run's timings.jsonl (persist.timings): what stays fixed, grows with items, with seeds, "
            "with both. Each check is predicted from the pilot alone, as `persist plan` predicts it.", "",
            "| items x seeds | wall (run / process) | fixed | x items | x seeds | x items x seeds | predicted from "
            "the pilot | error |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for d in c["designs"]:
        p = d["parts"]
        rows.append(f"| {d['items']} x {d['seeds']}{' (pilot)' if d['pilot'] else ''} | {d['run_s']:.0f} / "
                    f"{d['process_s']:.0f} | {p['fixed']:.0f} | {p['items']:.0f} | {p['seeds']:.0f} | "
                    f"{p['items_x_seeds']:.0f} | {t(d.get('predicted_s'))} | "
                    f"{'-' if d.get('error') is None else format(d['error'], '+.1%')} |")
    rows += ["", "Unit costs at each design (constant unit costs are what the linear model assumes):", "",
             "| items x seeds | s per model load | s per item and condition | s per reference | s per side-suite "
             "item | s per training step | ms per new token |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for d in c["designs"]:
        u = d["units"]
        rows.append(f"| {d['items']} x {d['seeds']} | {t(u['load_s'], '.2f')} | "
                    f"{t(u['score_s_per_item_condition'], '.3f')} | {t(u['score_s_per_reference'], '.3f')} | "
                    f"{t(u['side_s_per_item'], '.3f')} | {t(u['train_s_per_step'], '.2f')} | "
                    f"{t(None if u['generate_s_per_token'] is None else 1000 * u['generate_s_per_token'], '.1f')} |")
    return [*rows, ""]


def render(results: dict) -> str:
    """BENCHMARKS.md from results.json's object: a pure function of it."""
    figures = results["figures"]
    doc = [
        "# Benchmarks", "",
        f"Written by `make bench` (bench/peers/run_all.py) on {results['written']}. Do not edit by hand: every figure "
        "the comparisons reported is in [bench/peers/results.json](bench/peers/results.json), and "
        "`bench/peers/run_all.py --render` rewrites this file from it.", "",
        *([results["note"], ""] if results.get("note") else []),
        f"- Machine: {results['machine']}",
        f"- Python {results['python']}; " + ", ".join(f"{k} {x}" for k, x in results["versions"].items()),
        f"- Model: {results['model']}", "",
        *summary_table(figures), "",
        "Commands (run from the repository root; `make bench` runs them all):", "",
        *[f"- {k} ({dated(results, k)}{results['walls'][k]:.0f} s): `{c}`" for k, c in results["commands"].items()],
        "",
        *engine_table(figures.get("engines", {})),
        *cost_table(figures.get("cost", {})),
        "## Where the time goes (torch profiler, bench/peers/where_time_goes.py)", "",
        *profile_tables(figures["profile"]),
        "Each script's docstring (bench/peers/) says exactly what is compared.", "",
    ]
    return "\n".join(doc)


def write(results: dict, results_path: Path, out: Path) -> None:
    results_path.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    out.write_text(render(results), encoding="utf-8")


# ---------------------------------------------------------------- running


def run_jobs(commands: dict[str, list], tmp: Path, tiny: bool) -> tuple[dict, dict]:
    """Each job in turn (a child process; under --tiny its main() in this process); its figures and wall time."""
    figures, walls = {}, {}
    for name, cmd in commands.items():
        out = tmp / f"{name}.json"
        print(f"== {name}: {' '.join(cmd)}", flush=True)
        t0 = time.perf_counter()
        if tiny:
            module = importlib.import_module(cmd[1].removesuffix(".py").replace("/", "."))
            if module.main([*cmd[2:], "--json", str(out)]) != 0:
                raise SystemExit(f"{name} failed")
        else:
            subprocess.run([*cmd, "--json", str(out)], cwd=ROOT, check=True)
        walls[name] = time.perf_counter() - t0
        figures[name] = json.loads(out.read_text())
    return figures, walls


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench-python", default=str(ROOT / ".venv-bench" / "bin" / "python"))
    ap.add_argument("--items", type=int, default=40, help="probe items for the scoring comparison (40 items = "
                    "320 requests: 8 per item in the default suite, crossed with register)")
    ap.add_argument("--server-bin", help="llama.cpp's llama-server for the engine race (`make bench` builds one)")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--steps", type=int, default=12, help="training steps for the fine-tuning comparison")
    ap.add_argument("--cost-checks", help="cost.py's --checks (default 96:2,432:1)")
    ap.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    ap.add_argument("--results", type=Path, default=RESULTS, help="the raw figures, read by --render")
    ap.add_argument("--render", action="store_true", help="only rewrite --out from --results; run nothing")
    ap.add_argument("--tiny", action="store_true", help="every script's --tiny mode, in this process (smoke test)")
    ap.add_argument("--only", help="comma-separated jobs to run (e.g. cost); their figures replace those in --results "
                    "and the others are kept")
    args = ap.parse_args(argv)
    if args.render:
        results = json.loads(args.results.read_text(encoding="utf-8"))
        args.out.write_text(render(results), encoding="utf-8")
        print(f"wrote {args.out} from {args.results}")
        return 0
    if args.tiny and (args.out.resolve() == (ROOT / "BENCHMARKS.md").resolve() or args.results.resolve() == RESULTS):
        raise SystemExit("--tiny figures measure nothing: give --out and --results outside the repository's own")
    py = sys.executable
    commands = jobs(py, args.bench_python, args.items, args.prompts, args.max_new_tokens, args.steps,
                    None if args.tiny else args.server_bin, None if args.tiny else args.cost_checks)
    if args.only:
        unknown = sorted(set(args.only.split(",")) - set(commands))
        if unknown:
            raise SystemExit(f"--only {args.only}: no job {', '.join(unknown)}; choose from {', '.join(commands)}")
        commands = {k: c for k, c in commands.items() if k in args.only.split(",")}
    if args.tiny:
        commands = {k: [*c, "--tiny"] for k, c in commands.items()}
    with tempfile.TemporaryDirectory(prefix="persist-bench-") as tmp:
        figures, walls = run_jobs(commands, Path(tmp), args.tiny)
    shown = {k: " ".join(os.path.relpath(c, ROOT) if c in (py, args.bench_python) else c for c in cmd)
             for k, cmd in commands.items()}
    now = time.strftime("%Y-%m-%d %H:%M %Z")
    results = {"written": now, "machine": machine(),
               "python": platform.python_version(), "versions": {} if args.only else versions(args.bench_python if not args.tiny else py),
               "model": TINY_MODEL_LINE if args.tiny else MODEL_LINE, "commands": shown, "walls": walls,
               "figures": figures, "dates": {k: now for k in commands}}
    if args.only:  # the other jobs' figures, commands and dates stay as they were
        if not args.results.is_file():
            raise SystemExit(f"--only: {args.results} is missing; run every job once (make bench) first")
        old = json.loads(args.results.read_text(encoding="utf-8"))
        old.setdefault("dates", {k: old["written"] for k in old["commands"]})
        for key in ("commands", "walls", "figures", "dates"):
            old[key] = {**old[key], **results[key]}
        results = old
    write(results, args.results, args.out)
    print("\n".join(summary_table(results["figures"])))
    print(f"wrote {args.results} and {args.out}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # bench.* (tiny mode)
    sys.exit(main())
