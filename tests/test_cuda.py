"""CUDA-only checks, collected only with PERSIST_CUDA_TESTS=1 on a machine whose torch sees a GPU (conftest; bench/tools/gpu_check.sh sets
it): the HF engine on CUDA against the CPU fp32 reference, and (where vLLM is installed) the vLLM engine, with and
without a LoRA adapter, against the same reference.

Tolerance: fp32 on CUDA agrees with fp32 on the CPU to 1e-3 nats per request (summation order only); bf16 is
allowed 0.05 nats per continuation token (bf16 keeps 8 mantissa bits: ~0.4% relative error per logit).
"""

from __future__ import annotations

import pytest

from persist.models import LoadOptions
from persist.targets.base import GenerationConfig
from tests.test_targets import CHAT_A, REQUESTS

pytestmark = pytest.mark.cuda
BF16_NATS_PER_TOKEN = 0.05


def per_token_gaps(target, got: list[float], ref: list[float]) -> list[float]:
    return [abs(g - r) / len(target.encode_pair(chat, cont)[1]) for g, r, (chat, cont) in zip(got, ref, REQUESTS)]


def test_hf_engine_on_cuda_matches_cpu_fp32(tiny_folder):
    from persist.targets import open_target

    cpu = open_target(str(tiny_folder), LoadOptions(device="cpu", dtype="float32"))
    ref = cpu.loglikelihood(REQUESTS)
    fp32 = open_target(str(tiny_folder), LoadOptions(device="cuda", dtype="float32"))
    assert fp32.loglikelihood(REQUESTS) == pytest.approx(ref, abs=1e-3)
    assert [fp32.loglikelihood([r])[0] for r in REQUESTS] == pytest.approx(ref, abs=1e-3)  # batched == unbatched
    bf16 = open_target(str(tiny_folder), LoadOptions(device="cuda"))  # auto: bf16 on CUDA
    assert bf16.describe()["dtype"] in ("torch.bfloat16", "torch.float16")
    assert max(per_token_gaps(cpu, bf16.loglikelihood(REQUESTS), ref)) <= BF16_NATS_PER_TOKEN


@pytest.fixture(scope="module")
def smollm2_adapter(tmp_path_factory):
    """A random (non-zero) rank-8 LoRA on SmolLM2's attention, as peft saves it."""
    import torch
    from peft import LoraConfig, get_peft_model

    from persist import models

    folder = tmp_path_factory.mktemp("smollm2-lora") / "adapter"
    model, _ = models.load(models.resolve("smollm2-135m-instruct"), LoadOptions(device="cpu", dtype="float32"))
    torch.manual_seed(0)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(folder)
    return folder


@pytest.mark.vllm  # collected only with PERSIST_VLLM_TESTS=1, in vLLM's venv (conftest)
@pytest.mark.parametrize("adapter", [False, True], ids=["base", "lora"])
def test_vllm_engine_matches_hf_cpu_fp32(adapter, smollm2_adapter):
    from persist.targets import open_target, release_engines

    spec = "smollm2-135m-instruct" + (f"+{smollm2_adapter}" if adapter else "")
    cpu = open_target(spec, LoadOptions(device="cpu", dtype="float32"))
    ref = cpu.loglikelihood(REQUESTS)
    try:
        target = open_target(spec, LoadOptions(engine="vllm"))
        assert target.describe()["engine"] == "vllm" and (target.describe()["lora"] is not None) == adapter
        gaps = per_token_gaps(cpu, target.loglikelihood(REQUESTS), ref)
        assert max(gaps) <= BF16_NATS_PER_TOKEN
        if adapter:  # the LoRA is applied: the base model is much further from the reference than vLLM is
            base = open_target("smollm2-135m-instruct", LoadOptions(device="cpu", dtype="float32"))
            assert max(per_token_gaps(cpu, base.loglikelihood(REQUESTS), ref)) > 2 * max(gaps)
        text = target.generate([CHAT_A], GenerationConfig(max_new_tokens=16))[0]
        assert text.strip() and text == target.generate([CHAT_A], GenerationConfig(max_new_tokens=16))[0]
    finally:
        release_engines()
