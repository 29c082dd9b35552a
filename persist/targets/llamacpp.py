"""LlamaCppTarget (`--engine llamacpp`): generation through llama.cpp (llama-cpp-python, in this process) on the
model's own GGUF file, many sequences decoded together; scoring stays with the HF engine on the same weights.

Why only generation: the likelihood scores are the instrument's readings and stay bit-for-bit those of the default
engine (fp32, dequantised from the same GGUF), so records from either engine compare. llama.cpp runs the quantised
weights (4-bit for the bundled models) with its own kernels, so its texts are not the HF engine's, and whether it
is faster depends on the machine (on the 2-core CPU of 2026-12-07 it was not): bench/peers/engines.py measures
speed and agreement, and docs/engines.md gives the figures.

How it generates: prompts are rendered and tokenised by the HF engine's ChatEncoder (the same chat template and
token ids), and llama.cpp is handed token ids, never text. Up to `parallel` sequences share one llama.cpp context
(one KV cache, one sequence id each, kv_unified); every step is one llama_decode over a batch that holds the next
token of each running sequence and, where a sequence has finished, the next prompt in its slot (continuous
batching, as llama.cpp's server does with parallel slots). Greedy decoding is argmax over the logits; sampling uses
temperature and top-p with a numpy generator seeded per request (seed + request index), so samples are
reproducible but not the HF engine's. A sequence stops at the model's end-of-turn tokens (the HF generation
config's, as the HF engine) or at max_new_tokens; texts are decoded by the HF tokenizer and cut at stop strings
exactly as the HF engine does.

Only a GGUF runs here: a bundled name or a .gguf path. A LoRA adapter (a fine-tune attack's doses) is not served
by this engine; --engine llamacpp refuses such a model with a line saying so.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from persist.errors import ConfigError, ModelLoadError
from persist.schema import Chat
from persist.targets.base import PLAIN_STOP, GenerationConfig, truncate_at_stop

LLAMACPP_MISSING = ("--engine llamacpp: llama-cpp-python is not installed; pip install llama-cpp-python "
                    "(`make test-server` builds a CPU wheel once), or use --engine hf")
DEFAULT_PARALLEL = 16  # sequences decoded together (llama.cpp's server calls them slots)
BATCH_TOKENS = 512  # tokens per llama_decode call (prompt prefill is split into calls of at most this many)


def import_llama_cpp() -> Any:
    import logging

    try:
        import llama_cpp
    except ImportError:
        raise ConfigError(LLAMACPP_MISSING) from None
    quiet = logging.getLogger("llama-cpp-python")  # llama.cpp's load and context logs go through it
    if quiet.level == logging.NOTSET:
        quiet.setLevel(logging.ERROR)
    return llama_cpp


def parallel_from_env() -> int:
    """PERSIST_LLAMACPP_PARALLEL (default 16): how many sequences decode together."""
    raw = os.environ.get("PERSIST_LLAMACPP_PARALLEL", str(DEFAULT_PARALLEL))
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"PERSIST_LLAMACPP_PARALLEL={raw!r}: give a whole number >= 1 (sequences decoded together)")
    return n


def sample_token(logits: np.ndarray, config: GenerationConfig, rng: np.random.Generator | None) -> int:
    """argmax at temperature 0 (ties: the lowest id, as torch.argmax); else temperature + top-p sampling."""
    if config.temperature <= 0 or rng is None:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / config.temperature
    z -= z.max()
    p = np.exp(z)
    p /= p.sum()
    if config.top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        keep = np.cumsum(p[order]) - p[order] < config.top_p  # the smallest prefix whose mass reaches top_p
        mask = np.zeros_like(p, dtype=bool)
        mask[order[keep]] = True
        p = np.where(mask, p, 0.0)
        p /= p.sum()
    return int(rng.choice(len(p), p=p))


@dataclass
class Slot:
    """One running sequence: which request, where its next token goes, what it has generated."""

    request: int
    pos: int
    generated: list[int] = field(default_factory=list)
    rng: np.random.Generator | None = None


class LlamaCppEngine:
    """A llama.cpp model and a context sized for `parallel` sequences of up to `seq_tokens` tokens each."""

    def __init__(self, gguf: Path, *, parallel: int, threads: int, gpu_layers: int = 0) -> None:
        self.lib = import_llama_cpp()
        self.gguf = Path(gguf)
        self.parallel = parallel
        self.threads = threads
        lib = self.lib
        lib.llama_backend_init()
        params = lib.llama_model_default_params()
        params.n_gpu_layers = gpu_layers
        self.model = lib.llama_model_load_from_file(str(self.gguf).encode(), params)
        if not self.model:
            raise ModelLoadError(f"--engine llamacpp: llama.cpp cannot load {self.gguf} (is it a GGUF model file?)")
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.n_vocab = lib.llama_vocab_n_tokens(self.vocab)
        self.ctx: Any = None
        self.ctx_tokens = 0
        self.batch: Any = None

    def context(self, seq_tokens: int) -> Any:
        """A context whose one KV cache holds `parallel` sequences of `seq_tokens`; rebuilt only to grow."""
        lib = self.lib
        need = self.parallel * seq_tokens
        if self.ctx is not None and need <= self.ctx_tokens:
            lib.llama_memory_clear(lib.llama_get_memory(self.ctx), True)
            return self.ctx
        self.close_context()
        params = lib.llama_context_default_params()
        params.n_ctx = need
        params.n_batch = BATCH_TOKENS
        params.n_ubatch = BATCH_TOKENS
        params.n_seq_max = self.parallel
        params.kv_unified = True
        params.n_threads = params.n_threads_batch = self.threads
        params.no_perf = True
        self.ctx = lib.llama_init_from_model(self.model, params)
        if not self.ctx:
            raise ModelLoadError(f"--engine llamacpp: llama.cpp cannot make a context of {need} tokens "
                                 f"({self.parallel} sequences of {seq_tokens}); lower PERSIST_LLAMACPP_PARALLEL")
        self.ctx_tokens = need
        self.batch = lib.llama_batch_init(BATCH_TOKENS, 0, 1)
        return self.ctx

    def close_context(self) -> None:
        if self.batch is not None:
            self.lib.llama_batch_free(self.batch)
            self.batch = None
        if self.ctx is not None:
            self.lib.llama_free(self.ctx)
            self.ctx = None
            self.ctx_tokens = 0

    def close(self) -> None:
        self.close_context()
        if self.model:
            self.lib.llama_model_free(self.model)
            self.model = None

    def __del__(self) -> None:  # a context holds its KV cache's memory until freed
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown: the library may be gone already
            pass

    def decode(self, entries: Sequence[tuple[int, int, int, bool]]) -> dict[int, np.ndarray]:
        """Feed (token, position, sequence, wants logits) entries in calls of at most BATCH_TOKENS; returns the
        logits of each entry that wants them, keyed by its index in `entries` (copied: the next call overwrites)."""
        lib, out = self.lib, {}
        for start in range(0, len(entries), BATCH_TOKENS):
            chunk = entries[start:start + BATCH_TOKENS]
            b = self.batch
            for j, (tok, pos, seq, logits) in enumerate(chunk):
                b.token[j] = tok
                b.pos[j] = pos
                b.n_seq_id[j] = 1
                b.seq_id[j][0] = seq
                b.logits[j] = logits
            b.n_tokens = len(chunk)
            rc = lib.llama_decode(self.ctx, b)
            if rc != 0:
                raise RuntimeError(f"llama_decode returned {rc} (batch of {len(chunk)} tokens; 1 = no room in the "
                                   "KV cache)")
            for j, (_, _, _, logits) in enumerate(chunk):
                if logits:
                    ptr = lib.llama_get_logits_ith(self.ctx, j)
                    row = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(self.n_vocab,))
                    out[start + j] = row.copy()
        return out

    def forget(self, seq: int) -> None:
        self.lib.llama_memory_seq_rm(self.lib.llama_get_memory(self.ctx), seq, -1, -1)

    def generate_ids(self, prompts: Sequence[list[int]], config: GenerationConfig,
                     stop_ids: frozenset[int]) -> list[list[int]]:
        """New token ids per prompt (ending before a stop id), decoding up to `parallel` sequences together."""
        if not prompts:
            return []
        self.context(max(len(p) for p in prompts) + config.max_new_tokens)
        results: list[list[int]] = [[] for _ in prompts]
        waiting = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))  # longest first, as the HF engine
        waiting.reverse()  # pop() from the end takes the longest
        slots: dict[int, Slot] = {}
        pending: dict[int, int] = {}  # slot -> the token it feeds next
        while waiting or slots:
            entries: list[tuple[int, int, int, bool]] = []
            owner: dict[int, int] = {}  # entry index -> slot
            for seq in range(self.parallel):
                if seq not in slots and waiting:
                    i = waiting.pop()
                    self.forget(seq)
                    rng = np.random.default_rng(config.seed + i) if config.temperature > 0 else None
                    slots[seq] = Slot(i, len(prompts[i]), rng=rng)
                    ids = prompts[i]
                    entries += [(t, p, seq, p == len(ids) - 1) for p, t in enumerate(ids)]
                    owner[len(entries) - 1] = seq
                elif seq in pending:
                    slot = slots[seq]
                    entries.append((pending.pop(seq), slot.pos, seq, True))
                    slot.pos += 1
                    owner[len(entries) - 1] = seq
            logits = self.decode(entries)
            for j, seq in owner.items():
                slot = slots[seq]
                tok = sample_token(logits[j], config, slot.rng)
                if tok in stop_ids:
                    done = True
                else:
                    slot.generated.append(tok)
                    done = len(slot.generated) >= config.max_new_tokens
                if done:
                    results[slot.request] = slot.generated
                    del slots[seq]
                else:
                    pending[seq] = tok
        return results


class LlamaCppTarget:
    """Scores with `scorer` (the HF engine on the same weights); generates with llama.cpp on `gguf`."""

    def __init__(self, scorer: Any, gguf: Path, *, parallel: int | None = None, threads: int | None = None,
                 gpu_layers: int = 0) -> None:
        import torch

        self.scorer = scorer
        self.name = scorer.name
        self.gguf = Path(gguf)
        self.engine = LlamaCppEngine(self.gguf, parallel=parallel or parallel_from_env(),
                                     threads=threads or torch.get_num_threads(), gpu_layers=gpu_layers)
        eos = getattr(getattr(scorer.model, "generation_config", None), "eos_token_id", None)
        if eos is None:
            eos = scorer.tokenizer.eos_token_id
        ids = [eos] if isinstance(eos, int) else list(eos or [])
        if not ids:  # no end token known to transformers: llama.cpp's end-of-generation tokens
            lib, vocab = self.engine.lib, self.engine.vocab
            ids = [t for t in range(self.engine.n_vocab) if lib.llama_vocab_is_eog(vocab, t)]
        self.stop_ids = frozenset(int(t) for t in ids)

    @property
    def model(self) -> Any:  # white-box attacks and training read the HF weights
        return self.scorer.model

    @property
    def tokenizer(self) -> Any:
        return self.scorer.tokenizer

    def describe(self) -> dict[str, Any]:
        return {**self.scorer.describe(), "kind": "llamacpp", "engine": "llamacpp",
                "llama_cpp_version": getattr(self.engine.lib, "__version__", "unknown"), "gguf": str(self.gguf),
                "parallel": self.engine.parallel, "generation": "llama.cpp on the GGUF; scoring: the HF engine"}

    def render(self, chat: Chat) -> str:
        return str(self.scorer.render(chat))

    def loglikelihood(self, requests: Sequence[tuple[Chat, str]]) -> list[float]:
        return list(self.scorer.loglikelihood(requests))

    def generate(self, chats: Sequence[Chat], config: GenerationConfig) -> list[str]:
        if not chats:
            return []
        encoder = self.scorer.encoder
        prompts = [encoder.encode_chat(c) for c in chats]
        stops = tuple(config.stop) + (() if encoder.has_template else PLAIN_STOP)
        new = self.engine.generate_ids(prompts, config, self.stop_ids)
        return [truncate_at_stop(self.scorer.tokenizer.decode(ids, skip_special_tokens=True), stops) for ids in new]

    def __getattr__(self, name: str) -> Any:  # the rest of the HF target's surface (encode_pair, device, ...)
        if name == "scorer":
            raise AttributeError(name)
        return getattr(self.scorer, name)


def gguf_of(resolved: Any) -> Path:
    """The GGUF file a resolved model came from (a bundled name or a .gguf path), or a ConfigError."""
    from persist.bundled import bundled_gguf
    from persist.models import llama_cpp_can_run

    spec = resolved.spec
    if resolved.adapter:
        llama_cpp_can_run(replace(spec, adapter=resolved.adapter))
    llama_cpp_can_run(spec)
    return Path(spec.base).expanduser() if spec.kind == "gguf" else bundled_gguf(spec.base)
