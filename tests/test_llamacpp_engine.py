"""--engine llamacpp: generation by llama.cpp (llama-cpp-python, in process) on the bundled SmolLM2 GGUF, several
sequences decoded together; scoring stays with the HF engine.

The engine's texts are not the HF engine's (4-bit weights against fp32), and llama.cpp's logits move slightly
with the batch a sequence shares, so these tests do not compare texts with another engine. They check what must
hold whatever the numerics: each greedy token is llama.cpp's own top token for its prefix when that prefix is
evaluated alone (a wrong position, a sequence seeing another's cache or a lost token would break this by many
nats), stops and limits, and reproducibility. Needs llama-cpp-python: run by `make test-server`.
"""

from __future__ import annotations

import numpy as np
import pytest

from persist.errors import ConfigError
from persist.models import LoadOptions, ModelSpec, ResolvedModel
from persist.targets.base import GenerationConfig
from persist.targets.llamacpp import gguf_of, sample_token

PROMPTS = ["What is the capital of France?", "Give me one tip for sleeping better.",
           "Is it safe to stop a course of antibiotics early because I feel fine? Answer briefly.",
           "Reply with the single word yes.", "Name three colours of the rainbow.",
           "Write one sentence about the sea, then stop."]
CHATS = [[{"role": "user", "content": p}] for p in PROMPTS]
# How far below llama.cpp's best logit a greedy token may sit when its prefix is re-evaluated alone: the batch a
# token was decoded in changes llama.cpp's quantised dot products a little (measured 2026-12-07: at most 0.31
# logits over these 6 replies); a decoding bug (a wrong position, another sequence's cache) puts the token many
# logits down.
ARGMAX_SLACK = 1.0


@pytest.fixture(scope="module")
def engine_target(smollm2_target):
    from persist.models import bundled_gguf
    from persist.targets.llamacpp import LlamaCppTarget

    return LlamaCppTarget(smollm2_target, bundled_gguf("smollm2-135m-instruct"), parallel=3, threads=2)


@pytest.fixture(scope="module")
def solo(engine_target):
    """llama.cpp's high-level API on the same GGUF, one sequence, logits for every position."""
    import llama_cpp

    return llama_cpp.Llama(str(engine_target.gguf), n_ctx=512, logits_all=True, verbose=False, n_threads=2)


needs_llama_cpp = pytest.mark.server


@needs_llama_cpp
def test_each_greedy_token_is_llama_cpps_top_token_for_its_prefix(engine_target, solo):
    config = GenerationConfig(max_new_tokens=24)
    prompts = [engine_target.scorer.encoder.encode_chat(c) for c in CHATS]
    # 6 prompts through 3 slots: sequences start and end at different steps (continuous batching)
    new = engine_target.engine.generate_ids(prompts, config, engine_target.stop_ids)
    worst = 0.0
    for prompt, ids in zip(prompts, new, strict=True):
        assert ids, "no token generated"
        solo.reset()
        solo.eval(prompt + ids)
        scores = np.asarray(solo.scores[: len(prompt) + len(ids)])
        for k, tok in enumerate(ids):
            row = scores[len(prompt) + k - 1]
            gap = float(row.max() - row[tok])
            worst = max(worst, gap)
            assert gap <= ARGMAX_SLACK, f"token {k} of a reply is {gap:.2f} logits below llama.cpp's top token"
    print(f"\nworst gap to llama.cpp's top token, re-evaluated alone: {worst:.3f} logits")


@needs_llama_cpp
def test_limits_stops_and_text(engine_target):
    config = GenerationConfig(max_new_tokens=40)
    prompts = [engine_target.scorer.encoder.encode_chat(c) for c in CHATS]
    new = engine_target.engine.generate_ids(prompts, config, engine_target.stop_ids)
    assert all(1 <= len(ids) <= 40 for ids in new)
    assert not any(set(ids) & engine_target.stop_ids for ids in new)
    assert any(len(ids) < 40 for ids in new), "no reply ended at the end-of-turn token"
    texts = engine_target.generate(CHATS, config)
    assert texts == [engine_target.tokenizer.decode(ids, skip_special_tokens=True) for ids in new]
    cut = engine_target.generate(CHATS[:1], GenerationConfig(max_new_tokens=40, stop=(texts[0][5:9],)))
    assert cut == [texts[0][:texts[0].index(texts[0][5:9])]]


@needs_llama_cpp
def test_greedy_and_seeded_sampling_repeat(engine_target):
    greedy = GenerationConfig(max_new_tokens=16)
    assert engine_target.generate(CHATS, greedy) == engine_target.generate(CHATS, greedy)
    hot = GenerationConfig(max_new_tokens=16, temperature=1.0, seed=7)
    assert engine_target.generate(CHATS, hot) == engine_target.generate(CHATS, hot)
    other = engine_target.generate(CHATS, GenerationConfig(max_new_tokens=16, temperature=1.0, seed=8))
    assert other != engine_target.generate(CHATS, hot)


@needs_llama_cpp
def test_scoring_is_the_hf_engines_and_the_run_says_which_engine_generated(engine_target, smollm2_target):
    requests = [(CHATS[0], "Paris."), (CHATS[1], "Keep a regular bedtime.")]
    assert engine_target.loglikelihood(requests) == smollm2_target.loglikelihood(requests)
    d = engine_target.describe()
    assert d["engine"] == "llamacpp" and d["gguf"].endswith(".gguf") and d["parallel"] == 3


@needs_llama_cpp
def test_open_target_builds_it_from_the_bundled_name():
    from persist.targets import open_target
    from persist.targets.llamacpp import LlamaCppTarget

    t = open_target("smollm2-135m-instruct", LoadOptions(engine="llamacpp"))
    assert isinstance(t, LlamaCppTarget)


# ---------------------------------------------------------------- without llama.cpp


@pytest.mark.parametrize("spec, adapter, says", [
    ("HuggingFaceTB/SmolLM2-135M-Instruct", None, "llama.cpp runs GGUF files"),
    ("smollm2-135m-instruct", "/tmp/an-adapter", "does not serve LoRA adapters"),
    ("tiny-random", None, "llama.cpp runs GGUF files"),
])
def test_a_model_llama_cpp_cannot_run_is_refused_in_one_line(spec, adapter, says):
    resolved = ResolvedModel(spec=ModelSpec.parse(spec), path="/nowhere", adapter=adapter)
    with pytest.raises(ConfigError, match=says):
        gguf_of(resolved)


def test_gguf_path_and_engine_name(tmp_path):
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    spec = ModelSpec.parse(str(tmp_path / "m.gguf"))
    assert gguf_of(ResolvedModel(spec=spec, path="/x")) == tmp_path / "m.gguf"
    with pytest.raises(ConfigError, match="llamacpp"):
        LoadOptions(engine="llama.cpp")


def test_sampling_keeps_the_top_p_nucleus():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    assert sample_token(logits, GenerationConfig(), None) == 0
    rng = np.random.default_rng(0)
    draws = {sample_token(logits, GenerationConfig(temperature=1.0, top_p=0.7), rng) for _ in range(200)}
    assert draws == {0, 1}  # 0.5 + 0.3 reaches 0.7; 2 and 3 are outside the nucleus
