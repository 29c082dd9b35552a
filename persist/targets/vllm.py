"""VLLMTarget (`--engine vllm`): a local model served by vLLM's offline engine (`vllm.LLM`) on CUDA GPUs.

The records are the HF engine's: prompts are rendered and tokenised by the same ChatEncoder (chat template,
lm-eval-harness continuation split), and vLLM is handed token ids, never text, so both engines score exactly the
same tokens. log p(continuation | prompt) is the sum of vLLM's prompt log-probs (SamplingParams(prompt_logprobs=0,
max_tokens=1)) over the continuation's positions. A fine-tuned adapter (SPEC+ADAPTER_DIR, the dose checkpoints of
a fine-tune attack) is served as a LoRA (LoRARequest) on the unmerged base; tensor parallel comes from --tp.

Everything that decides what vLLM is asked (engine arguments, sampling parameters, scoring prompts, LoRA
requests, reading the log-probs back) is a pure function here, testable without vLLM; vLLM itself is imported
only when a VLLMTarget is built.
"""

from __future__ import annotations

import gc
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from persist.errors import ConfigError, ModelLoadError
from persist.models import VLLM_MISSING, LoadOptions, ResolvedModel
from persist.schema import Chat
from persist.targets.base import PLAIN_STOP, GenerationConfig, truncate_at_stop
from persist.targets.encoding import ChatEncoder

# Prompt log-probs only: 0 = no top-k alternatives, just each prompt token's own log-prob; one throwaway
# generated token because vLLM must generate at least one.
SCORING_PARAMS: dict[str, Any] = {"max_tokens": 1, "prompt_logprobs": 0, "temperature": 0.0}
LORA_RANKS = (8, 16, 32, 64, 128, 256, 512)  # the max_lora_rank values vLLM accepts
VLLM_DTYPES = {"auto": "auto", "float32": "float32", "fp32": "float32", "bfloat16": "bfloat16",
               "bf16": "bfloat16", "float16": "float16", "fp16": "float16"}


def import_vllm() -> Any:
    """The vllm module, or a ConfigError saying how to get it."""
    try:
        import vllm
    except ImportError:
        raise ConfigError(VLLM_MISSING) from None
    return vllm


# ---------------------------------------------------------------- request building (pure)


def build_sampling(config: GenerationConfig, stops: Sequence[str] = (), index: int = 0) -> dict[str, Any]:
    """SamplingParams keyword arguments for request number `index` of a batch: greedy at temperature 0 (top_p then
    has no effect and is left at 1), else temperature/top_p sampling. vLLM seeds each request on its own, so
    request i gets seed + i: repeated prompts in one batch still give different samples (as one seeded batch
    does in the HF engine), and every sample is reproducible."""
    kwargs: dict[str, Any] = {"max_tokens": config.max_new_tokens, "seed": config.seed + index,
                              "stop": list(dict.fromkeys((*config.stop, *stops)))}
    if config.temperature > 0:
        kwargs.update(temperature=config.temperature, top_p=config.top_p)
    else:
        kwargs.update(temperature=0.0, top_p=1.0)
    return kwargs


def build_scoring_prompts(encoder: ChatEncoder,
                          requests: Sequence[tuple[Chat, str]]) -> list[tuple[list[int], int]]:
    """(prompt + continuation token ids, index where the continuation starts) per request: the tokens the HF
    target scores (ChatEncoder.encode_pair), joined, since vLLM scores a prompt's own tokens."""
    out = []
    for i, (chat, continuation) in enumerate(requests):
        p, c = encoder.encode_pair(chat, continuation)
        if not c:
            raise ValueError(f"request {i}: the continuation is empty after tokenisation")
        out.append((p + c, len(p)))
    return out


def sum_prompt_logprobs(ids: Sequence[int], start: int, prompt_logprobs: Sequence[Any]) -> float:
    """Sum of log p(ids[j] | ids[:j]) for j >= start, from RequestOutput.prompt_logprobs: one entry per prompt
    token (None for the first), each a mapping token id -> Logprob (or a bare float) that holds the prompt's own
    token (plus top-k alternatives when asked)."""
    if len(prompt_logprobs) != len(ids):
        raise RuntimeError(f"vLLM returned {len(prompt_logprobs)} prompt log-probs for {len(ids)} prompt tokens")
    total = 0.0
    for j in range(start, len(ids)):
        entry: Mapping[int, Any] | None = prompt_logprobs[j]
        if entry is None or ids[j] not in entry:
            raise RuntimeError(f"vLLM returned no log-prob for prompt token {j} (id {ids[j]})")
        lp = entry[ids[j]]
        total += float(getattr(lp, "logprob", lp))
    return total


def lora_request_args(spec: Any) -> tuple[str, int, str] | None:
    """(lora_name, lora_int_id, lora_path) for a spec or resolved model that carries an adapter, else None. The
    id is derived from the adapter's path: vLLM caches adapters by id, so one id must mean one folder."""
    adapter = getattr(spec, "adapter", None)
    if not adapter:
        return None
    path = str(Path(adapter).expanduser().resolve())
    lora_id = int(hashlib.sha256(path.encode()).hexdigest()[:7], 16) + 1  # >= 1 (0 means "no LoRA" to vLLM)
    return spec.name or Path(path).name, lora_id, path


def adapter_rank(adapter: str) -> int:
    """The LoRA rank `r` that peft wrote in the adapter's adapter_config.json."""
    config = Path(adapter).expanduser() / "adapter_config.json"
    try:
        return int(json.loads(config.read_text())["r"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"adapter {adapter}: cannot read its LoRA rank from {config} "
                             f"({type(exc).__name__}: {exc})") from None


def llm_kwargs(resolved: ResolvedModel, options: LoadOptions) -> dict[str, Any]:
    """Keyword arguments for vllm.LLM: the resolved weights (safetensors only, unless --allow-pickle), the same
    tokenizer folder, dtype (auto = vLLM's rule: the checkpoint's dtype, fp32 checkpoints in 16 bits),
    tensor_parallel_size from --tp, and LoRA serving sized to the adapter's rank when the spec has one."""
    if options.load_in_4bit:
        raise ConfigError("--load-in-4bit with --engine vllm: serve a pre-quantised checkpoint (AWQ, GPTQ) with "
                          "vLLM, or use --engine hf for bitsandbytes 4-bit")
    kwargs: dict[str, Any] = {"model": resolved.path, "tokenizer": resolved.path,
                              "dtype": VLLM_DTYPES[options.dtype], "tensor_parallel_size": options.tp,
                              "trust_remote_code": options.trust_remote_code,
                              "load_format": "auto" if options.allow_pickle else "safetensors"}
    if resolved.adapter:
        rank = adapter_rank(resolved.adapter)
        kwargs.update(enable_lora=True, max_lora_rank=next((r for r in LORA_RANKS if r >= rank), rank))
    return kwargs


# ---------------------------------------------------------------- the engine


# The one vLLM engine of this process, by its LLM(...) arguments. An engine reserves a fixed share of GPU memory
# (gpu_memory_utilization) for its life, so a second one beside it does not fit: targets look their engine up here
# on every call, the dose targets of one base (same arguments, different LoRA requests) share it, and a target
# with other arguments replaces it. Fine-tuning frees it first (release_engine), since training needs the memory.
_ENGINE: dict[str, Any] = {}


def engine_key(kwargs: Mapping[str, Any]) -> str:
    return json.dumps(kwargs, sort_keys=True, default=str)


def shared_llm(kwargs: Mapping[str, Any]) -> Any:
    """The running vllm.LLM for these arguments, started (and any other engine shut down) if need be."""
    key = engine_key(kwargs)
    if key in _ENGINE:
        return _ENGINE[key]
    release_engine()
    vllm = import_vllm()
    try:
        llm = vllm.LLM(**kwargs)
    except (OSError, ValueError, RuntimeError) as exc:
        first = (str(exc).splitlines() or [""])[0][:300]
        raise ModelLoadError(f"--engine vllm: cannot start vLLM on {kwargs['model']} ({type(exc).__name__}: {first})"
                             ) from None
    _ENGINE[key] = llm
    return llm


def release_engine() -> None:
    """Shut the engine down and give its GPU memory back (vLLM's engine core stops when the LLM is collected)."""
    if not _ENGINE:
        return
    _ENGINE.clear()
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


class VLLMTarget:
    """A local model (and optional LoRA adapter) behind vLLM's offline engine; see the module docstring."""

    def __init__(self, resolved: ResolvedModel, options: LoadOptions, *, tokenizer: Any = None) -> None:
        self.resolved = resolved
        self.options = options
        self.name = resolved.name
        self.kwargs = llm_kwargs(resolved, options)
        self.lora = lora_request_args(resolved)
        self.vllm = import_vllm()
        if tokenizer is None:  # the tokenizer the HF engine would load, so both tokenise identically
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(resolved.path, trust_remote_code=options.trust_remote_code)
        self.tokenizer = tokenizer
        self.encoder = ChatEncoder(tokenizer)
        self.has_template = self.encoder.has_template
        llm = shared_llm(self.kwargs)  # start now: a model that cannot load fails before any run folder exists
        model_config = getattr(getattr(llm, "llm_engine", None), "model_config", None)
        self.dtype = str(getattr(model_config, "dtype", self.kwargs["dtype"]))  # what "auto" became

    def describe(self) -> dict[str, Any]:
        return {"kind": "vllm", "engine": "vllm", "name": self.name,
                "vllm_version": getattr(self.vllm, "__version__", "unknown"), "dtype": self.dtype,
                "tensor_parallel_size": self.kwargs["tensor_parallel_size"], "chat_template": self.has_template,
                "lora": None if self.lora is None else {"name": self.lora[0], "id": self.lora[1], "path": self.lora[2]},
                "resolved": self.resolved.to_dict()}

    def _run(self, prompts: Sequence[list[int]], params: Sequence[dict[str, Any]]) -> list[Any]:
        """One LLM.generate call over token-id prompts (sampling parameters per prompt); outputs come back in the
        prompts' order."""
        lora = None if self.lora is None else self._lora_request(self.lora)
        llm = shared_llm(self.kwargs)
        return list(llm.generate([{"prompt_token_ids": ids} for ids in prompts],
                                 [self.vllm.SamplingParams(**p) for p in params], lora_request=lora, use_tqdm=False))

    def _lora_request(self, args: tuple[str, int, str]) -> Any:
        from vllm.lora.request import LoRARequest

        return LoRARequest(*args)

    def loglikelihood(self, requests: Sequence[tuple[Chat, str]]) -> list[float]:
        if not requests:
            return []
        prompts = build_scoring_prompts(self.encoder, requests)
        outputs = self._run([ids for ids, _ in prompts], [SCORING_PARAMS] * len(prompts))
        return [sum_prompt_logprobs(ids, start, out.prompt_logprobs) for (ids, start), out in zip(prompts, outputs)]

    def generate(self, chats: Sequence[Chat], config: GenerationConfig) -> list[str]:
        if not chats:
            return []
        stops = tuple(config.stop) + (() if self.has_template else PLAIN_STOP)
        outputs = self._run([self.encoder.encode_chat(c) for c in chats],
                            [build_sampling(config, stops, i) for i in range(len(chats))])
        return [truncate_at_stop(out.outputs[0].text, stops) for out in outputs]
