"""HFTarget: a local transformers model, batched, with shared-prompt reuse for log-likelihoods.

loglikelihood packs each distinct prompt and all its candidate continuations into one row (a "prompt tree"):
prompt | cont_1 | cont_2 | ..., with a 4D attention mask so that each continuation sees the prompt and itself
only, and explicit positions (every continuation starts right after the prompt). So a prompt shared by k
candidates (aligned and misaligned references, say) is computed once, not k times; rows are length-bucketed
(sorted, batched by padded tokens) so little padding is computed; the vocabulary projection runs only on the
positions whose next token is scored. Batched results equal unbatched ones to float rounding (~1e-6 nats).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from persist.schema import Chat
from persist.targets.base import PLAIN_STOP, GenerationConfig, truncate_at_stop
from persist.targets.encoding import ChatEncoder


@contextmanager
def cpu_gqa_attention() -> Iterator[None]:
    """While inside: torch's SDPA handles grouped-query attention on CPU even when a mask is passed.

    transformers expands the key/value heads to the query heads (repeat_kv: one copy of K and V per layer per
    forward) whenever an attention mask is present, because CUDA's fused kernels need that; torch's CPU SDPA
    takes `enable_gqa` together with a mask. Our batches always carry a mask (padding, prompt trees). Measured on
    SmolLM2 (9 query / 3 KV heads), 22 rows: decode steps 35% faster, scoring ~4%, outputs identical to ~1e-7.
    Other devices keep transformers' rule.

    Scoped to HFTarget's own forwards, never installed for the process: the two paths differ in the last bits,
    and a process-wide switch made a LoRA training that ran after any scoring differ from the same training in
    a fresh process, so a run resumed after kill -9 retrained a different adapter (bench/experiments/determinism_probe.py).
    Re-entrant; a no-op if transformers moves the function."""
    try:
        from transformers.integrations import sdpa_attention
    except ImportError:
        yield
        return
    original = getattr(sdpa_attention, "use_gqa_in_sdpa", None)
    if original is None or getattr(original, "persist_cpu_gqa", False):
        yield
        return

    def use_gqa_in_sdpa(attention_mask: Any, key: Any, value: Any) -> bool:
        if key.device.type == "cpu" and key.shape[-1] == value.shape[-1]:
            return True
        return original(attention_mask, key, value)

    use_gqa_in_sdpa.persist_cpu_gqa = True  # type: ignore[attr-defined]
    sdpa_attention.use_gqa_in_sdpa = use_gqa_in_sdpa
    try:
        yield
    finally:
        sdpa_attention.use_gqa_in_sdpa = original


def auto_batch_tokens(model: Any, kind: str) -> int:
    """Batch size in tokens, from the device and its free memory.

    CPU: fixed, measured on a 2-core AMX Xeon with SmolLM2 (bench): scoring is fastest at ~2k padded tokens per
    forward (4k: +5-20%, 16k: +35%; activations fall out of cache), generation at ~8k prompt+new tokens (about
    20 rows of 400; 64 prompts x 64 new tokens: 42.7 s at 8k, 46.4 s at 16k, 51.4 s at 32k, 57.1 s at 4k). CUDA: a quarter of the free memory divided by the activation bytes
    of one token (scoring: hidden states, attention and MLP intermediates; generation: that plus its KV cache),
    clamped to [2k, 64k]."""
    try:
        import torch

        param = next(model.parameters())
        if param.device.type != "cuda":
            return 2048 if kind == "score" else 8192
        free, _ = torch.cuda.mem_get_info(param.device)
    except (StopIteration, RuntimeError, AttributeError):
        return 2048 if kind == "score" else 8192
    cfg = getattr(model, "config", None)
    hidden = getattr(cfg, "hidden_size", 4096)
    inter = getattr(cfg, "intermediate_size", 4 * hidden)
    per_token = (6 * hidden + 3 * inter) * param.element_size()
    if kind == "generate":
        kv_heads = getattr(cfg, "num_key_value_heads", 0) or getattr(cfg, "num_attention_heads", 32)
        head_dim = getattr(cfg, "head_dim", 0) or hidden // getattr(cfg, "num_attention_heads", 32)
        per_token += 2 * getattr(cfg, "num_hidden_layers", 32) * kv_heads * head_dim * param.element_size()
    return int(max(2048, min(65536, free // 4 // per_token)))


@dataclass
class TreeBatch:
    """Prompt trees laid out as rows: ids, positions, the 4D additive mask, and for every scored token its row,
    the column whose logits predict it, the token, and the request it belongs to."""

    ids: Any
    pos: Any
    mask: Any
    rows: list[int]
    cols: list[int]
    targets: list[int]
    owner: list[int]


def tree_batch(trees: list[tuple[list[int], list[int], int]], encoded: Sequence[tuple[list[int], list[int]]],
               pad_id: int, dtype: Any) -> TreeBatch:
    """Row layout: prompt | cont_1[:-1] | cont_2[:-1] | ... with a 4D mask (each continuation sees the prompt and
    itself, never a sibling) and explicit positions (each continuation starts at len(prompt)), so the row computes
    exactly what separate sequences would. `trees`: (prompt ids, indices into `encoded`, row width), widest first."""
    import torch

    width = trees[0][2]
    n = len(trees)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    pos = torch.zeros((n, width), dtype=torch.long)
    allowed = torch.zeros((n, width, width), dtype=torch.bool)
    rows: list[int] = []
    cols: list[int] = []
    targets: list[int] = []
    owner: list[int] = []
    for r, (prompt, idx, length) in enumerate(trees):
        plen = len(prompt)
        ids[r, :plen] = torch.tensor(prompt)
        pos[r, :plen] = torch.arange(plen)
        allowed[r, :plen, :plen] = torch.ones(plen, plen, dtype=torch.bool).tril()
        off = plen
        for i in idx:
            cont = encoded[i][1]
            k = len(cont) - 1
            if k:
                ids[r, off:off + k] = torch.tensor(cont[:-1])
                pos[r, off:off + k] = torch.arange(plen, plen + k)
                allowed[r, off:off + k, :plen] = True
                allowed[r, off:off + k, off:off + k] = torch.ones(k, k, dtype=torch.bool).tril()
            rows += [r] * len(cont)
            cols += [plen - 1, *range(off, off + k)]  # the position whose logits predict each token
            targets += cont
            owner += [i] * len(cont)
            off += k
        pad = torch.arange(length, width)
        allowed[r, pad, pad] = True  # padding attends to itself only (no empty softmax rows)
    mask = torch.zeros((n, 1, width, width), dtype=dtype)
    mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)
    return TreeBatch(ids, pos, mask, rows, cols, targets, owner)


def tree_logprobs(model: Any, hidden: Any, batch: TreeBatch, n_requests: int) -> Any:
    """Each request's summed log p (float64, index = request) from the decoder's last hidden states: the
    vocabulary projection runs only on the positions whose next token is scored. Differentiable."""
    import torch

    dev = hidden.device
    picked = hidden[torch.tensor(batch.rows, device=dev), torch.tensor(batch.cols, device=dev)]  # (tokens, hidden)
    head = model.get_output_embeddings()
    cfg = getattr(model, "config", None)
    scale = getattr(cfg, "logits_scaling", None)
    cap = getattr(cfg, "final_logit_softcapping", None)
    tgt = torch.tensor(batch.targets, device=dev)
    parts = []
    for a in range(0, len(batch.targets), 1024):  # chunks bound the (tokens x vocab) logits in memory
        logits = head(picked[a:a + 1024]).float()
        if scale:
            logits = logits / scale
        if cap:
            logits = torch.tanh(logits / cap) * cap
        # cross_entropy = one fused log_softmax + gather (logsumexp is several passes over the vocab)
        parts.append(-torch.nn.functional.cross_entropy(logits, tgt[a:a + 1024], reduction="none"))
    token_lp = torch.cat(parts).double()
    totals = torch.zeros(n_requests, dtype=torch.float64, device=dev)
    return totals.index_add(0, torch.tensor(batch.owner, device=dev), token_lp)


class HFTarget:
    """A causal LM + tokenizer already loaded (see persist.models.load)."""

    def __init__(self, model: Any, tokenizer: Any, *, name: str = "model", batch_tokens: int | None = None,
                 gen_batch_tokens: int | None = None, max_batch: int = 64,
                 info: dict[str, Any] | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        # Padded tokens per scoring forward, and prompt + new tokens per generation batch; None = from memory.
        self.batch_tokens = batch_tokens or auto_batch_tokens(model, "score")
        self.gen_batch_tokens = gen_batch_tokens or auto_batch_tokens(model, "generate")
        self.max_batch = max_batch
        self.info = info or {}
        self.encoder = ChatEncoder(tokenizer)
        self.has_template = self.encoder.has_template
        self._prompt_cache = self.encoder.cache

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    def describe(self) -> dict[str, Any]:
        return {"kind": "hf", "name": self.name, "dtype": str(next(self.model.parameters()).dtype),
                "device": str(self.device), "chat_template": self.has_template, **self.info}

    # ------------------------------------------------------------ rendering and tokenisation (persist.targets.encoding)

    def render(self, chat: Chat) -> str:
        """The prompt text the model sees: its chat template (or a plain transcript), ready for the reply."""
        return self.encoder.render(chat)

    def _encode(self, text: str) -> list[int]:
        return self.encoder.encode(text)

    def encode_pair(self, chat: Chat, continuation: str) -> tuple[list[int], list[int]]:
        """(prompt ids, continuation ids) with lm-eval-harness's split (see ChatEncoder.encode_pair)."""
        return self.encoder.encode_pair(chat, continuation)

    # ------------------------------------------------------------ log-likelihood

    def loglikelihood(self, requests: Sequence[tuple[Chat, str]]) -> list[float]:
        return self.loglikelihood_tokens([self.encode_pair(chat, cont) for chat, cont in requests])

    def loglikelihood_tokens(self, encoded: Sequence[tuple[list[int], list[int]]]) -> list[float]:
        """log p(continuation ids | prompt ids) for already tokenised pairs (what loglikelihood runs on)."""
        import torch

        encoded = list(encoded)
        for i, (_, c) in enumerate(encoded):
            if not c:
                raise ValueError(f"request {i}: the continuation is empty after tokenisation")
        # One tree per distinct prompt: the prompt once, then each candidate continuation (minus its last token).
        # A prompt shared by very many candidates is split into several trees, so that no row (and its
        # width x width mask) outgrows a batch.
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (p, _) in enumerate(encoded):
            groups.setdefault(tuple(p), []).append(i)
        trees = []
        for prompt, idx in groups.items():
            chunk: list[int] = []
            width = len(prompt)
            for i in idx:
                extra = len(encoded[i][1]) - 1
                if chunk and width + extra > self.batch_tokens:
                    trees.append((list(prompt), chunk, width))
                    chunk, width = [], len(prompt)
                chunk.append(i)
                width += extra
            trees.append((list(prompt), chunk, width))
        # Longest first (memory errors surface early); neighbours have similar lengths, so rows pad little.
        trees.sort(key=lambda t: -t[2])
        results: list[float] = [0.0] * len(encoded)
        batch: list[tuple[list[int], list[int], int]] = []
        with torch.inference_mode(), cpu_gqa_attention():
            for tree in trees:
                if batch and (batch[0][2] * (len(batch) + 1) > self.batch_tokens or len(batch) >= self.max_batch):
                    self._score_trees(batch, encoded, results)
                    batch = []
                batch.append(tree)
            if batch:
                self._score_trees(batch, encoded, results)
        return results

    def _score_trees(self, trees: list[tuple[list[int], list[int], int]],
                     encoded: list[tuple[list[int], list[int]]], results: list[float]) -> None:
        """One forward for a batch of prompt trees (see tree_batch)."""
        dev = self.device
        batch = tree_batch(trees, encoded, self.tokenizer.pad_token_id, next(self.model.parameters()).dtype)
        hidden = self.model.get_decoder()(input_ids=batch.ids.to(dev), attention_mask=batch.mask.to(dev),
                                          position_ids=batch.pos.to(dev), use_cache=False).last_hidden_state
        totals = tree_logprobs(self.model, hidden, batch, len(encoded))
        for i in set(batch.owner):
            results[i] = float(totals[i])

    # ------------------------------------------------------------ generation

    def generate(self, chats: Sequence[Chat], config: GenerationConfig) -> list[str]:
        import torch

        prompts = [self._encode(self.render(c)) for c in chats]
        order = sorted(range(len(chats)), key=lambda i: -len(prompts[i]))
        outputs: list[str] = [""] * len(chats)
        pad = self.tokenizer.pad_token_id
        stops = tuple(config.stop) + (() if self.has_template else PLAIN_STOP)
        start = 0
        while start < len(order):
            width = len(prompts[order[start]]) + config.max_new_tokens
            n = max(1, min(self.max_batch, self.gen_batch_tokens // max(width, 1)))
            chunk = order[start: start + n]
            start += n
            plen = max(len(prompts[i]) for i in chunk)
            ids = torch.full((len(chunk), plen), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), plen), dtype=torch.long)
            for r, i in enumerate(chunk):
                ids[r, plen - len(prompts[i]):] = torch.tensor(prompts[i])
                mask[r, plen - len(prompts[i]):] = 1
            kwargs: dict[str, Any] = {"max_new_tokens": config.max_new_tokens, "pad_token_id": pad}
            if config.temperature > 0:
                torch.manual_seed(config.seed)
                kwargs.update(do_sample=True, temperature=config.temperature, top_p=config.top_p)
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            with torch.inference_mode(), cpu_gqa_attention():
                gen = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                          **kwargs)
            for r, i in enumerate(chunk):
                text = self.tokenizer.decode(gen[r, plen:], skip_special_tokens=True)
                outputs[i] = truncate_at_stop(text, stops)
        return outputs
