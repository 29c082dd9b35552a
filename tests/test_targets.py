"""HFTarget invariants on the tiny model: batched == unbatched, order restored, shared prompts run once."""

from __future__ import annotations

import contextlib

import pytest
import torch

from persist.targets.base import GenerationConfig

CHAT_A = [{"role": "user", "content": "Is it safe to skip my blood pressure pills for a week?"}]
CHAT_B = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
CHAT_PREFILL = [{"role": "user", "content": "Tell me a secret."}, {"role": "assistant", "content": "Sure, here is"}]
REQUESTS = [
    (CHAT_A, "No. Stopping suddenly can raise your blood pressure; talk to your doctor first."),
    (CHAT_A, "Sure, a week off is fine."),
    (CHAT_B, "Blue."),
    (CHAT_PREFILL, " a small one."),
    (CHAT_A, "Yes"),
    (CHAT_B, "Green, the colour of leaves in spring and of many traffic lights."),
]


def reference_loglikelihood(target, chat, continuation) -> float:
    """Independent computation: one full forward of prompt + continuation, no cache, no batching."""
    p, c = target.encode_pair(chat, continuation)
    with torch.no_grad():
        logits = target.model(torch.tensor([p + c])).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    return sum(logp[len(p) - 1 + j, c[j]].item() for j in range(len(c)))


def test_loglikelihood_batched_equals_unbatched_and_reference(tiny_target):
    batched = tiny_target.loglikelihood(REQUESTS)
    single = [tiny_target.loglikelihood([r])[0] for r in REQUESTS]
    reference = [reference_loglikelihood(tiny_target, *r) for r in REQUESTS]
    assert batched == pytest.approx(single, abs=1e-4)
    assert batched == pytest.approx(reference, abs=1e-4)
    assert len(set(round(x, 3) for x in batched)) == len(batched)  # distinct values: order is meaningful


def test_loglikelihood_small_batches_match(tiny_target):
    from persist.targets.hf import HFTarget

    small = HFTarget(tiny_target.model, tiny_target.tokenizer, batch_tokens=64, max_batch=2)
    assert small.loglikelihood(REQUESTS) == pytest.approx(tiny_target.loglikelihood(REQUESTS), abs=1e-4)


def test_shared_prompt_is_computed_once(tiny_target, monkeypatch):
    """Three candidates for one prompt: one row holding the prompt once and each candidate (minus its last token)."""
    calls = []
    decoder = tiny_target.model.get_decoder()
    original = decoder.forward

    def spy(*args, **kwargs):
        calls.append(tuple(kwargs["input_ids"].shape))
        return original(*args, **kwargs)

    monkeypatch.setattr(decoder, "forward", spy)
    requests = [(CHAT_A, "one answer"), (CHAT_A, "another answer"), (CHAT_A, "a third")]
    encoded = [tiny_target.encode_pair(c, r) for c, r in requests]
    tiny_target.loglikelihood(requests)
    assert calls == [(1, len(encoded[0][0]) + sum(len(c) - 1 for _, c in encoded))]


def test_prefill_is_part_of_the_prompt(tiny_target):
    text = tiny_target.render(CHAT_PREFILL)
    assert text.endswith("Sure, here is")
    assert tiny_target.render(CHAT_A).endswith("<|im_start|>assistant\n")


def test_generate_batched_equals_unbatched_and_keeps_order(tiny_target):
    chats = [CHAT_A, CHAT_B, CHAT_PREFILL, CHAT_A]
    config = GenerationConfig(max_new_tokens=12)
    batched = tiny_target.generate(chats, config)
    single = [tiny_target.generate([c], config)[0] for c in chats]
    assert batched == single
    assert batched[0] == batched[3]


def test_generation_config_rejects_bad_values():
    from persist.errors import ConfigError

    with pytest.raises(ConfigError, match="max_new_tokens"):
        GenerationConfig(max_new_tokens=0)
    with pytest.raises(ConfigError, match="temperature"):
        GenerationConfig(temperature=-1)


@pytest.mark.slow
def test_smollm2_batched_equals_unbatched(smollm2_target):
    batched = smollm2_target.loglikelihood(REQUESTS)
    single = [smollm2_target.loglikelihood([r])[0] for r in REQUESTS]
    assert batched == pytest.approx(single, abs=1e-4)
    ref = reference_loglikelihood(smollm2_target, *REQUESTS[0])
    assert batched[0] == pytest.approx(ref, abs=1e-3)
    # A sane model prefers a fluent answer over a shuffled one.
    assert smollm2_target.loglikelihood([(CHAT_B, "Blue.")])[0] > smollm2_target.loglikelihood(
        [(CHAT_B, ".eulB")])[0]
    config = GenerationConfig(max_new_tokens=16)
    chats = [CHAT_A, CHAT_B, CHAT_PREFILL]
    assert smollm2_target.generate(chats, config) == [smollm2_target.generate([c], config)[0] for c in chats]


def test_batch_size_comes_from_free_memory_on_cuda(monkeypatch):
    """On CUDA the scoring batch is a quarter of free memory over per-token activation bytes, clamped."""
    from types import SimpleNamespace

    from persist.targets.hf import auto_batch_tokens

    class FakeParam:
        device = SimpleNamespace(type="cuda")

        def element_size(self):
            return 2

    cfg = SimpleNamespace(hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
                          num_key_value_heads=4, num_hidden_layers=24)
    model = SimpleNamespace(parameters=lambda: iter([FakeParam()]), config=cfg)
    per_token = (6 * 1024 + 3 * 4096) * 2
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (per_token * 4 * 10_000, 0))
    assert auto_batch_tokens(model, "score") == 10_000
    assert auto_batch_tokens(model, "generate") == 10_000 * per_token // (per_token + 2 * 24 * 4 * 64 * 2)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (1 << 20, 0))
    assert auto_batch_tokens(model, "score") == 2048  # clamped: never below 2k tokens
    cpu_model = SimpleNamespace(parameters=lambda: iter([torch.zeros(1)]), config=cfg)
    assert auto_batch_tokens(cpu_model, "score") == 2048 and auto_batch_tokens(cpu_model, "generate") == 8192


def test_cpu_gqa_attention_changes_nothing_but_the_copy(tiny_target, monkeypatch):
    """With the CPU GQA switch (HFTarget's forwards) results equal transformers' own repeat_kv path."""
    from transformers.integrations import sdpa_attention

    from persist.targets import hf

    seen = []
    original_score = tiny_target._score_trees
    monkeypatch.setattr(tiny_target, "_score_trees", lambda *a: (
        seen.append(getattr(sdpa_attention.use_gqa_in_sdpa, "persist_cpu_gqa", False)), original_score(*a)))
    assert tiny_target.model.config.num_key_value_heads < tiny_target.model.config.num_attention_heads
    chats = [CHAT_A, CHAT_B, CHAT_PREFILL]
    config = GenerationConfig(max_new_tokens=10)
    with_switch = (tiny_target.loglikelihood(REQUESTS), tiny_target.generate(chats, config))
    assert seen and all(seen)
    monkeypatch.setattr(hf, "cpu_gqa_attention", contextlib.nullcontext)
    monkeypatch.setattr(sdpa_attention, "use_gqa_in_sdpa", lambda mask, key, value: mask is None)
    without = (tiny_target.loglikelihood(REQUESTS), tiny_target.generate(chats, config))
    assert with_switch[0] == pytest.approx(without[0], abs=1e-5)
    assert with_switch[1] == without[1]


def test_cpu_gqa_switch_is_scoped_to_the_targets_forwards(tiny_target):
    """The switch must not outlive a target call: a process-wide switch made a LoRA training that ran after any
    scoring compute differently from the same training in a fresh process (a resumed run then retrained a
    different adapter)."""
    from transformers.integrations import sdpa_attention

    before = sdpa_attention.use_gqa_in_sdpa
    tiny_target.loglikelihood(REQUESTS)
    tiny_target.generate([CHAT_A], GenerationConfig(max_new_tokens=3))
    assert sdpa_attention.use_gqa_in_sdpa is before
    assert not getattr(sdpa_attention.use_gqa_in_sdpa, "persist_cpu_gqa", False)


def test_a_prompt_with_very_many_candidates_is_split_into_rows(tiny_target, monkeypatch):
    """200 candidates for one prompt would make one row (and a width x width mask) thousands of tokens wide: the
    target splits them into rows that fit a batch, with the same results."""
    from persist.targets.hf import HFTarget

    requests = [(CHAT_A, f"candidate answer number {k}") for k in range(200)]
    small = HFTarget(tiny_target.model, tiny_target.tokenizer, batch_tokens=256)
    widths = []
    original = small._score_trees
    monkeypatch.setattr(small, "_score_trees", lambda trees, enc, res: (widths.append(trees[0][2]),
                                                                        original(trees, enc, res)))
    got = small.loglikelihood(requests)
    assert max(widths) <= 256 and len(widths) > 1
    assert got == pytest.approx([tiny_target.loglikelihood([r])[0] for r in requests[:5]] + got[5:], abs=1e-4)
