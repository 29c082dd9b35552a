"""Why a training resumed after kill -9 can differ in the last digits (docs/journal/2026-12-02.md).

    .venv/bin/python bench/experiments/determinism_probe.py MODE OUT   MODE: fresh | after-train | after-score | after-load
    .venv/bin/python bench/experiments/determinism_probe.py --tiny MODE OUT   # the tiny random model (smoke test)

Trains bad-medical seed 1 for 2 steps on SmolLM2 into OUT/b, after doing MODE's work in the same process; compare
OUT/b/step-00002/adapter_model.safetensors across modes with cmp. Measured: after-train and after-load give the
same bytes as fresh; after-score (an HFTarget log-likelihood call first) did not, because HFTarget installed its
CPU grouped-query-attention switch for the whole process (SDPA with enable_gqa instead of repeat_kv; equal to ~1e-7,
not bit-equal). The switch is now scoped to HFTarget's own forwards, and all four modes give the same bytes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from persist import models, plugins
from persist.models import LoadOptions, ModelSpec
from persist.registry import RECIPES, PluginSpec

ROOT = Path(__file__).resolve().parents[2]
MODES = ("fresh", "after-train", "after-score", "after-load")


def recipe(seed: int):
    return RECIPES.build(PluginSpec("bad-medical", {"train": {"batch_size": 4, "seed": seed}}))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=MODES)
    ap.add_argument("out", type=Path)
    ap.add_argument("--tiny", action="store_true", help="the tiny random model instead of SmolLM2: bench/tiny.py")
    args = ap.parse_args(argv)
    model_name = "smollm2-135m-instruct"
    if args.tiny:
        from bench import tiny

        model_name = tiny.MODEL
    probe(args.mode, args.out, model_name)
    return 0


def probe(mode: str, out: Path, model_name: str) -> None:
    plugins.load()
    res = models.resolve(ModelSpec.parse(model_name), allow_pickle=False)
    base = str(models.merged_folder(res))
    if mode == "after-train":
        recipe(1000).run(base, out / "warm", (0, 2))
    elif mode == "after-score":
        from persist.targets import open_target

        target = open_target(model_name, LoadOptions())
        print(target.loglikelihood([([{"role": "user", "content": "Hi"}], "Hello there.")]))
        del target
    elif mode == "after-load":
        import torch
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(base)
        with torch.no_grad():
            model(torch.tensor([[1, 2, 3]]))
        del model
    elif mode != "fresh":
        raise SystemExit(f"MODE {mode!r}: fresh, after-train, after-score or after-load")
    recipe(1).run(base, out / "b", (0, 2))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # bench.* (tiny mode)
    sys.exit(main())
