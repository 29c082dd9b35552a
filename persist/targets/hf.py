"""HFTarget: a local transformers model, batched, with shared-prompt KV reuse for log-likelihoods.

loglikelihood runs in two stages per batch:
  1. the distinct prompts of the batch, left-padded, one forward with use_cache (only the last logit kept);
  2. the continuations, right-padded, fed on top of the prompt KV cache (rows repeated per candidate).
So a prompt shared by k candidates (aligned and misaligned references, say) is computed once, not k times.
Positions are passed explicitly, so padding never shifts RoPE and batched results equal unbatched ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from persist.schema import Chat
from persist.targets.base import PLAIN_STOP, GenerationConfig, render_plain, truncate_at_stop


class HFTarget:
    """A causal LM + tokenizer already loaded (see persist.models.load)."""

    def __init__(self, model: Any, tokenizer: Any, *, name: str = "model", batch_tokens: int = 8192,
                 max_batch: int = 64, info: dict[str, Any] | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.batch_tokens = batch_tokens  # padded tokens per forward; bounds activation memory
        self.max_batch = max_batch
        self.info = info or {}
        self.has_template = bool(getattr(tokenizer, "chat_template", None))
        self._prompt_cache: dict[str, list[int]] = {}

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    def describe(self) -> dict[str, Any]:
        return {"kind": "hf", "name": self.name, "dtype": str(next(self.model.parameters()).dtype),
                "device": str(self.device), "chat_template": self.has_template, **self.info}

    # ------------------------------------------------------------ rendering and tokenisation

    def render(self, chat: Chat) -> str:
        """The prompt text the model sees: its chat template (or a plain transcript), ready for the reply."""
        if not self.has_template:
            return render_plain(chat)
        prefill = bool(chat) and chat[-1]["role"] == "assistant"
        return self.tokenizer.apply_chat_template(
            chat, tokenize=False, add_generation_prompt=not prefill, continue_final_message=prefill)

    def _encode(self, text: str) -> list[int]:
        # Chat templates already contain any BOS; plain transcripts get the tokenizer's usual specials.
        ids = self._prompt_cache.get(text)
        if ids is None:
            ids = self.tokenizer(text, add_special_tokens=not self.has_template)["input_ids"]
            if len(self._prompt_cache) < 100_000:
                self._prompt_cache[text] = ids
        return ids

    def encode_pair(self, chat: Chat, continuation: str) -> tuple[list[int], list[int]]:
        """(prompt ids, continuation ids), split the way lm-eval-harness does: encode the whole text and
        take what follows the prompt's tokens, so merges across the boundary match natural text."""
        prompt = self.render(chat)
        if self.has_template is False and chat[-1]["role"] != "assistant" and not continuation.startswith(" "):
            continuation = " " + continuation  # "Assistant:" + " text"
        p_ids = self._encode(prompt)
        whole = self.tokenizer(prompt + continuation, add_special_tokens=not self.has_template)["input_ids"]
        if whole[: len(p_ids)] != p_ids:  # the boundary merged into the prompt's last token: fall back
            return p_ids, self.tokenizer(continuation, add_special_tokens=False)["input_ids"]
        return p_ids, whole[len(p_ids):]

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
        # Group requests by prompt; process the longest groups first (memory errors surface early).
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (p, _) in enumerate(encoded):
            groups.setdefault(tuple(p), []).append(i)
        order = sorted(groups, key=lambda p: -(len(p) + max(len(encoded[i][1]) for i in groups[p])))
        results: list[float] = [0.0] * len(encoded)
        batch: list[int] = []
        width = 0
        with torch.inference_mode():
            for prompt in order:
                for i in groups[prompt]:
                    need = len(encoded[i][0]) + len(encoded[i][1])
                    if batch and (max(width, need) * (len(batch) + 1) > self.batch_tokens
                                  or len(batch) >= self.max_batch):
                        self._score_batch(batch, encoded, results)
                        batch, width = [], 0
                    batch.append(i)
                    width = max(width, need)
            if batch:
                self._score_batch(batch, encoded, results)
        return results

    def _score_batch(self, batch: list[int], encoded: list[tuple[list[int], list[int]]],
                     results: list[float]) -> None:
        import torch

        dev = self.device
        pad = self.tokenizer.pad_token_id
        prompts: list[list[int]] = []
        prompt_row: dict[tuple[int, ...], int] = {}
        rows = []
        for i in batch:
            key = tuple(encoded[i][0])
            if key not in prompt_row:
                prompt_row[key] = len(prompts)
                prompts.append(encoded[i][0])
            rows.append(prompt_row[key])
        # Stage 1: distinct prompts, left-padded.
        plen = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), plen), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), plen), dtype=torch.long)
        for r, p in enumerate(prompts):
            ids[r, plen - len(p):] = torch.tensor(p)
            mask[r, plen - len(p):] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                         use_cache=True, logits_to_keep=1)
        first_logp = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)  # (n_prompts, V)
        row_idx = torch.tensor(rows, device=dev)
        conts = [encoded[i][1] for i in batch]
        total = first_logp[row_idx, torch.tensor([c[0] for c in conts], device=dev)]
        clen = max(len(c) for c in conts) - 1
        if clen > 0:
            # Stage 2: continuations minus their last token (its logit is never needed), right-padded.
            cache = out.past_key_values
            cache.reorder_cache(row_idx)  # repeat each prompt's KV rows for its candidates
            cids = torch.full((len(batch), clen), pad, dtype=torch.long)
            cmask = torch.zeros((len(batch), clen), dtype=torch.long)
            for r, c in enumerate(conts):
                cids[r, : len(c) - 1] = torch.tensor(c[:-1])
                cmask[r, : len(c) - 1] = 1
            plens = torch.tensor([len(encoded[i][0]) for i in batch])
            cpos = plens[:, None] + torch.arange(clen)[None, :]
            full_mask = torch.cat([mask[torch.tensor(rows)], cmask], dim=1)
            out2 = self.model(input_ids=cids.to(dev), attention_mask=full_mask.to(dev), position_ids=cpos.to(dev),
                              past_key_values=cache, use_cache=True)
            logp = torch.log_softmax(out2.logits.float(), dim=-1)  # (B, clen, V)
            targets = torch.full((len(batch), clen), 0, dtype=torch.long)
            for r, c in enumerate(conts):
                targets[r, : len(c) - 1] = torch.tensor(c[1:])
            tok_lp = logp.gather(-1, targets.to(dev)[..., None])[..., 0] * cmask.to(dev)
            total = total + tok_lp.sum(-1)
        for r, i in enumerate(batch):
            results[i] = float(total[r])

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
            n = max(1, min(self.max_batch, self.batch_tokens // max(width, 1)))
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
            with torch.inference_mode():
                gen = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                          **kwargs)
            for r, i in enumerate(chunk):
                text = self.tokenizer.decode(gen[r, plen:], skip_special_tokens=True)
                outputs[i] = truncate_at_stop(text, stops)
        return outputs
