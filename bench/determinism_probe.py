"""Why a training resumed after kill -9 can differ in the last digits (docs/NOTES.md, 2026-12-02).

    .venv/bin/python bench/determinism_probe.py MODE OUT      MODE: fresh | after-train | after-score | after-load

Trains bad-medical seed 1 for 2 steps on SmolLM2 into OUT/b, after doing MODE's work in the same process; compare
OUT/b/step-00002/adapter_model.safetensors across modes with cmp. Measured: after-train and after-load give the
same bytes as fresh; after-score (an HFTarget log-likelihood call first) does not.
"""
import sys
from pathlib import Path
from persist import plugins; plugins.load()
from persist import models
from persist.models import LoadOptions, ModelSpec
from persist.registry import RECIPES, PluginSpec

mode = sys.argv[1]
res = models.resolve(ModelSpec.parse("smollm2-135m-instruct"), allow_pickle=False)
base = str(models.merged_folder(res))
def recipe(seed):
    return RECIPES.build(PluginSpec("bad-medical", {"train": {"batch_size": 4, "seed": seed}}))
out = Path(sys.argv[2])
if mode == "after-train":
    recipe(1000).run(base, out / "warm", (0, 2))
elif mode == "after-score":
    from persist.targets import open_target
    t = open_target("smollm2-135m-instruct", LoadOptions())
    print(t.loglikelihood([([{"role": "user", "content": "Hi"}], "Hello there.")]))
    del t
elif mode == "after-load":
    import torch
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(base)
    with torch.no_grad(): m(torch.tensor([[1, 2, 3]]))
    del m
recipe(1).run(base, out / "b", (0, 2))
