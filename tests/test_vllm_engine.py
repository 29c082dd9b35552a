"""The vLLM engine without vLLM: what it would send (engine arguments, sampling parameters, scoring prompts, LoRA
requests) and how it reads log-probs back, checked against the HF engine on the tiny model; then VLLMTarget end
to end through the CLI against a fake `vllm` module whose engine computes with transformers."""

from __future__ import annotations

import importlib.machinery
import json
import os
import sys
import types
from pathlib import Path

import pytest
import torch

from persist import cli
from persist.errors import ConfigError
from persist.models import LoadOptions, ModelSpec, resolve
from persist.targets import vllm as engine
from persist.targets.base import GenerationConfig
from persist.targets.encoding import ChatEncoder
from tests.test_targets import CHAT_A, CHAT_B, CHAT_PREFILL, REQUESTS


def full_prompt_logprobs(model, ids: list[int]) -> list:
    """vLLM's RequestOutput.prompt_logprobs for `ids`, computed independently (one plain forward): None for the
    first token, then {token id: Logprob} holding each prompt token's own log-prob."""
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
    return [None] + [{ids[j]: types.SimpleNamespace(logprob=logp[j - 1, ids[j]].item())} for j in range(1, len(ids))]


def make_adapter(base: Path, folder: Path, rank: int = 4) -> Path:
    """A real peft LoRA adapter for the tiny model, with non-zero weights (peft's default B=0 would be a no-op)."""
    if (folder / "adapter_config.json").is_file():
        return folder
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(r=rank, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def adapter_dir(tiny_folder, tmp_path_factory) -> Path:
    return make_adapter(tiny_folder, tmp_path_factory.mktemp("lora") / "adapter")


@pytest.fixture(autouse=True)
def no_resident_engine():
    engine.release_engine()
    yield
    engine.release_engine()


# ---------------------------------------------------------------- request building


def test_sampling_params_greedy_and_sampled():
    greedy = engine.build_sampling(GenerationConfig(max_new_tokens=7, temperature=0.0, top_p=0.5, seed=3,
                                                    stop=("\n\n",)), stops=("\nUser:", "\n\n"))
    assert greedy == {"max_tokens": 7, "seed": 3, "stop": ["\n\n", "\nUser:"], "temperature": 0.0, "top_p": 1.0}
    sampled = engine.build_sampling(GenerationConfig(max_new_tokens=32, temperature=0.7, top_p=0.9, seed=11), index=2)
    assert sampled == {"max_tokens": 32, "seed": 13, "stop": [], "temperature": 0.7, "top_p": 0.9}
    assert engine.SCORING_PARAMS == {"max_tokens": 1, "prompt_logprobs": 0, "temperature": 0.0}


@pytest.mark.parametrize("template", [True, False], ids=["chat-template", "plain-transcript"])
def test_scoring_prompts_are_the_hf_targets_tokens(tiny_target, template, tmp_path):
    """Same chat + continuation -> the token ids the HF target scores, split at the same place; summing the
    continuation's prompt log-probs (read back as vLLM returns them) gives the HF target's log-likelihood."""
    from persist.targets.hf import HFTarget

    tok = tiny_target.tokenizer
    if not template:  # a base model without a chat template: plain transcript, the tokenizer's own specials
        tok.save_pretrained(tmp_path)
        tok = type(tok).from_pretrained(tmp_path)
        tok.chat_template = None
    hf = HFTarget(tiny_target.model, tok, name="tiny", batch_tokens=512)
    prompts = engine.build_scoring_prompts(ChatEncoder(tok), REQUESTS)
    assert len(prompts) == len(REQUESTS)
    for (ids, start), (chat, cont) in zip(prompts, REQUESTS):
        p, c = hf.encode_pair(chat, cont)
        assert (ids, start) == (p + c, len(p))
        assert 0 < start < len(ids)
    got = [engine.sum_prompt_logprobs(ids, start, full_prompt_logprobs(hf.model, ids)) for ids, start in prompts]
    assert got == pytest.approx(hf.loglikelihood(REQUESTS), abs=1e-4)


def test_scoring_prompt_with_empty_continuation_is_refused(tiny_target):
    with pytest.raises(ValueError, match="request 1: the continuation is empty"):
        engine.build_scoring_prompts(ChatEncoder(tiny_target.tokenizer), [(CHAT_A, "ok"), (CHAT_B, "")])


def test_prompt_logprobs_that_miss_a_token_are_an_error():
    ids = [5, 6, 7]
    with pytest.raises(RuntimeError, match="3 prompt tokens"):
        engine.sum_prompt_logprobs(ids, 1, [None, {6: -1.0}])
    with pytest.raises(RuntimeError, match="prompt token 2"):
        engine.sum_prompt_logprobs(ids, 1, [None, {6: -1.0}, {8: -2.0}])
    assert engine.sum_prompt_logprobs(ids, 1, [None, {6: -1.0}, {7: -2.5, 9: -0.1}]) == -3.5


def test_lora_request_and_engine_for_a_base_plus_adapter_spec(tiny_folder, adapter_dir):
    """base+ADAPTER: the engine loads the unmerged base with LoRA enabled (rank rounded up to one vLLM accepts),
    and each request carries (name, stable id >= 1, absolute adapter path)."""
    spec = ModelSpec.parse(f"{tiny_folder}+{adapter_dir}")
    resolved = resolve(spec)
    name, lora_id, path = engine.lora_request_args(resolved)
    assert name == spec.name == f"{tiny_folder}+adapter"
    assert path == str(adapter_dir.resolve()) and lora_id >= 1
    assert engine.lora_request_args(spec) == (name, lora_id, path)  # the spec alone gives the same request
    other = adapter_dir.parent / "other"
    other.mkdir(exist_ok=True)
    assert engine.lora_request_args(ModelSpec(text="x", kind="folder", base="b", adapter=str(other), name="o"))[1] \
        != lora_id
    kwargs = engine.llm_kwargs(resolved, LoadOptions(engine="vllm"))
    assert kwargs["model"] == kwargs["tokenizer"] == str(tiny_folder.resolve())  # the base, never a merged copy
    assert kwargs["enable_lora"] is True and kwargs["max_lora_rank"] == 8  # r=4 -> 8
    assert engine.lora_request_args(resolve(str(tiny_folder))) is None
    assert "enable_lora" not in engine.llm_kwargs(resolve(str(tiny_folder)), LoadOptions(engine="vllm"))


def test_engine_arguments_follow_the_load_options(tiny_folder):
    resolved = resolve(str(tiny_folder))
    kwargs = engine.llm_kwargs(resolved, LoadOptions(engine="vllm", tp=4, dtype="bf16", trust_remote_code=True))
    assert kwargs == {"model": str(tiny_folder.resolve()), "tokenizer": str(tiny_folder.resolve()),
                      "dtype": "bfloat16", "tensor_parallel_size": 4, "trust_remote_code": True,
                      "load_format": "safetensors"}
    assert engine.llm_kwargs(resolved, LoadOptions(engine="vllm", allow_pickle=True))["load_format"] == "auto"
    with pytest.raises(ConfigError, match="--load-in-4bit with --engine vllm"):
        engine.llm_kwargs(resolved, LoadOptions(engine="vllm", load_in_4bit=True))


@pytest.mark.parametrize(("options", "expect"), [
    (dict(engine="sglang"), "--engine 'sglang'"),
    (dict(engine="vllm", tp=0), "--tp 0"),
    (dict(tp=2), "needs --engine vllm"),
    (dict(engine="vllm", device="cpu"), "vLLM runs on CUDA GPUs"),
    (dict(engine="vllm", device="cuda:1"), "CUDA_VISIBLE_DEVICES"),
])
def test_bad_engine_options(options, expect):
    with pytest.raises(ConfigError, match=expect.replace("(", r"\(")):
        LoadOptions(**options)


def test_an_endpoint_with_engine_vllm_is_refused():
    with pytest.raises(ConfigError, match="an endpoint runs its own engine"):
        ModelSpec.parse("openai:m@http://127.0.0.1:9/v1").check_load(LoadOptions(engine="vllm"))


# ---------------------------------------------------------------- the CLI


def invoke(argv: list[str], monkeypatch, capsys) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["persist", *argv])
    try:
        cli.main()
    except SystemExit as exc:
        return int(exc.code or 0), capsys.readouterr().err
    return 0, capsys.readouterr().err


@pytest.mark.parametrize("command", ["score", "generate"])
def test_engine_vllm_without_vllm_is_one_line_exit_2(command, tmp_path, tiny_folder, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "vllm", None)  # not importable, even where vLLM is installed
    monkeypatch.setenv("PERSIST_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PERSIST_DEBUG", raising=False)
    runs = tmp_path / "runs"
    argv = [command, "--model", str(tiny_folder), "--engine", "vllm"]
    argv += ["hello"] if command == "generate" else ["--limit", "2", "--runs-dir", str(runs)]
    code, err = invoke(argv, monkeypatch, capsys)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "pip install 'persist[vllm]'" in lines[0] and "CUDA GPU" in lines[0] and "Traceback" not in err
    assert not runs.exists()


# ---------------------------------------------------------------- end to end, against a fake vllm


class FakeLLM:
    """Stands in for vllm.LLM: records how it was built and called, and computes with transformers (the base from
    kwargs['model'], plus the LoRA a request names, applied unmerged with peft)."""

    built: list[dict] = []
    calls: list[dict] = []

    def __init__(self, **kwargs):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        FakeLLM.built.append(kwargs)
        self.kwargs = kwargs
        self.base = AutoModelForCausalLM.from_pretrained(kwargs["model"], dtype=torch.float32).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(kwargs["tokenizer"])

    def model_for(self, lora):
        if lora is None:
            return self.base
        from peft import PeftModel

        assert self.kwargs.get("enable_lora"), "a LoRA request on an engine built without enable_lora"
        return PeftModel.from_pretrained(self.base, lora.lora_path).eval()

    def generate(self, prompts, params, lora_request=None, use_tqdm=True):
        assert len(params) == len(prompts)
        FakeLLM.calls.append({"n": len(prompts), "params": [p.kwargs for p in params], "lora": lora_request})
        model = self.model_for(lora_request)
        outs = []
        for p, sp in zip(prompts, params):
            ids = p["prompt_token_ids"]
            if sp.kwargs.get("prompt_logprobs") == 0:
                outs.append(types.SimpleNamespace(prompt_logprobs=full_prompt_logprobs(model, ids),
                                                  outputs=[types.SimpleNamespace(text="")]))
                continue
            assert sp.kwargs["temperature"] == 0.0, "the fake decodes greedily only"
            with torch.no_grad():
                gen = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=sp.kwargs["max_tokens"],
                                     do_sample=False, pad_token_id=self.tokenizer.pad_token_id)
            text = self.tokenizer.decode(gen[0, len(ids):], skip_special_tokens=True)
            outs.append(types.SimpleNamespace(prompt_logprobs=None, outputs=[types.SimpleNamespace(text=text)]))
        if lora_request is not None:
            model.unload()  # take the LoRA layers out again: the base stays unmerged
        return outs


@pytest.fixture
def fake_vllm(monkeypatch):
    from dataclasses import dataclass

    @dataclass(frozen=True)  # vLLM's LoRARequest hashes too (its engine caches adapters by request)
    class LoRARequest:
        lora_name: str
        lora_int_id: int
        lora_path: str

    class SamplingParams:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    vllm = types.ModuleType("vllm")
    vllm.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    vllm.__version__ = "0.0-fake"
    vllm.LLM, vllm.SamplingParams = FakeLLM, SamplingParams
    lora, request = types.ModuleType("vllm.lora"), types.ModuleType("vllm.lora.request")
    request.LoRARequest = LoRARequest
    vllm.lora, lora.request = lora, request
    for name, mod in (("vllm", vllm), ("vllm.lora", lora), ("vllm.lora.request", request)):
        monkeypatch.setitem(sys.modules, name, mod)
    # --engine vllm asks torch for a CUDA device before loading; the fake engine computes on the CPU
    monkeypatch.setattr("persist.models.pick_device", lambda device="auto": "cuda" if device == "cuda" else "cpu")
    FakeLLM.built, FakeLLM.calls = [], []
    return vllm


def read_run(folder: Path) -> tuple[dict, list[dict]]:
    header = json.loads((folder / "header.json").read_text())
    records = [json.loads(ln) for ln in (folder / "records.jsonl").read_text().splitlines()]
    return header, sorted(records, key=lambda r: r["item_id"])


@pytest.mark.parametrize("with_adapter", [False, True], ids=["base", "base+adapter"])
def test_score_with_engine_vllm_equals_the_hf_engine(with_adapter, fake_vllm, tmp_path, tiny_folder, adapter_dir,
                                                     monkeypatch, capsys):
    """`persist score --engine vllm --tp 2` end to end: the flags reach the engine, the header names the engine,
    and every reference's log-likelihood equals the HF engine's (a LoRA spec: served as a LoRA request on the
    unmerged base, equal to the HF engine's peft model)."""
    monkeypatch.setenv("PERSIST_HOME", str(tmp_path / "home"))
    model = f"{tiny_folder}+{adapter_dir}" if with_adapter else str(tiny_folder)
    base = ["score", "--model", model, "--limit", "3", "--runs-dir", str(tmp_path / "runs")]
    code, err = invoke([*base, "--name", "hf", "--device", "cpu"], monkeypatch, capsys)
    assert code == 0, err
    code, err = invoke([*base, "--name", "vllm", "--engine", "vllm", "--tp", "2"], monkeypatch, capsys)
    assert code == 0, err
    assert len(FakeLLM.built) == 1 and FakeLLM.built[0]["tensor_parallel_size"] == 2
    assert FakeLLM.built[0]["model"] == str(tiny_folder.resolve())
    assert FakeLLM.calls and all(p == engine.SCORING_PARAMS for c in FakeLLM.calls for p in c["params"])
    loras = {c["lora"] for c in FakeLLM.calls}
    assert loras == ({fake_vllm.lora.request.LoRARequest(*engine.lora_request_args(ModelSpec.parse(model)))}
                     if with_adapter else {None})
    hf_header, hf_records = read_run(tmp_path / "runs" / "hf")
    header, records = read_run(tmp_path / "runs" / "vllm")
    assert header["models"]["model"]["engine"] == "vllm" and hf_header["models"]["model"]["engine"] == "hf"
    assert header["config"]["load"]["engine"] == "vllm" and header["config"]["load"]["tp"] == 2
    assert [r["item_id"] for r in records] == [r["item_id"] for r in hf_records] and len(records) >= 3
    for a, b in zip(records, hf_records):
        for side in ("logp_aligned", "logp_misaligned"):
            assert a["details"][side] == pytest.approx(b["details"][side], abs=1e-3)


def test_generate_with_engine_vllm(fake_vllm, tiny_folder):
    """Greedy generation from the same prompt ids as the HF engine gives the HF engine's text."""
    from persist.targets import open_target

    config = GenerationConfig(max_new_tokens=6)
    target = open_target(str(tiny_folder), LoadOptions(engine="vllm"))
    out = target.generate([CHAT_A, CHAT_PREFILL], config)
    assert FakeLLM.calls[-1]["params"] == [{"max_tokens": 6, "seed": i, "stop": [], "temperature": 0.0, "top_p": 1.0}
                                           for i in range(2)]
    hf = open_target(str(tiny_folder), LoadOptions(device="cpu"))
    assert out == [hf.generate([chat], config)[0] for chat in (CHAT_A, CHAT_PREFILL)] and any(out)
    described = target.describe()
    assert described["engine"] == "vllm" and described["vllm_version"] == "0.0-fake" and described["dtype"] == "auto"
    again = open_target(str(tiny_folder), LoadOptions(engine="vllm"))  # same arguments: the engine is shared
    again.loglikelihood([(CHAT_B, "Blue.")])
    assert len(FakeLLM.built) == 1


# ---------------------------------------------------------------- bench/tools/gpu_check.sh and its comparison


def test_gpu_check_without_cuda_skips_with_the_command(tmp_path):
    """CPU-only: exit 0 after 'no CUDA device: skipped' and the command to run on a GPU machine. An nvidia-smi that
    finds no GPU is put first on PATH, so the test takes the same path on a GPU machine (and never recurses into
    the GPU check's own `make test`)."""
    import subprocess

    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:/usr/bin:/bin"}
    proc = subprocess.run(["bash", "bench/tools/gpu_check.sh"], capture_output=True, text=True, env=env, timeout=60,
                          cwd=Path(__file__).resolve().parents[1])
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, proc.stderr
    assert lines[0] == "no CUDA device: skipped" and len(lines) == 2, proc.stdout
    assert "bash bench/tools/gpu_check.sh" in lines[1] and "TORCH_SPEC=" in lines[1]


def test_compare_loglik_on_hand_built_runs(tmp_path):
    """Differences per reference, per byte and per item, against numbers worked out by hand."""
    from bench.tools.compare_loglik import compare, read_records

    def run(name: str, shift: float, flip: bool) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        recs = [{"role": "model", "key": f"k{i}", "score": 0.6 + (0.3 if flip and i == 1 else 0),
                 "details": {"logp_aligned": [-10.0 - shift * i], "logp_misaligned": [-12.0],
                             "logodds": (-1 if flip and i == 1 else 1) * 2.0, "ref_bytes": 40}} for i in range(3)]
        (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        return folder

    r = compare(read_records(run("a", 0, False)), read_records(run("b", 0.2, True)))
    assert r["items"] == 3 and r["references"] == 6 and r["same_side"] == 2
    assert r["max_nats"] == pytest.approx(0.4) and r["median_nats"] == pytest.approx(0.0)
    assert r["max_nats_per_byte"] == pytest.approx(0.01) and r["max_score_diff"] == pytest.approx(0.3)
    assert r["ok"] is False  # the score moved by 0.3 > 0.02
