"""ChatEncoder: how a local engine turns a chat (+ continuation) into token ids.

Shared by the HF and vLLM targets, so both score exactly the same tokens: the model's chat template (or a plain
transcript for models without one), and lm-eval-harness's continuation split. Needs only a tokenizer, no torch.
"""

from __future__ import annotations

from typing import Any

from persist.schema import Chat
from persist.targets.base import render_plain


class ChatEncoder:
    """Renders chats with a tokenizer's chat template and splits (prompt, continuation) into token ids."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.has_template = bool(getattr(tokenizer, "chat_template", None))
        self.cache: dict[str, list[int]] = {}  # prompt text -> ids; prompts repeat across candidates and batches

    def render(self, chat: Chat) -> str:
        """The prompt text the model sees: its chat template (or a plain transcript), ready for the reply."""
        if not self.has_template:
            return render_plain(chat)
        prefill = bool(chat) and chat[-1]["role"] == "assistant"
        return self.tokenizer.apply_chat_template(
            chat, tokenize=False, add_generation_prompt=not prefill, continue_final_message=prefill)

    def encode(self, text: str) -> list[int]:
        # Chat templates already contain any BOS; plain transcripts get the tokenizer's usual specials.
        ids = self.cache.get(text)
        if ids is None:
            ids = self.tokenizer(text, add_special_tokens=not self.has_template)["input_ids"]
            if len(self.cache) < 100_000:
                self.cache[text] = ids
        return ids

    def encode_chat(self, chat: Chat) -> list[int]:
        """Token ids of the rendered prompt (what generation starts from)."""
        return self.encode(self.render(chat))

    def render_pair(self, chat: Chat, continuation: str) -> tuple[str, str]:
        """(prompt text, continuation text) as scored: a plain transcript ends in "Assistant:", so a reply gets a
        leading space; a template (or a prefill) is followed by the continuation as given. Endpoints that score
        text, not ids (persist.targets.openai), send exactly these two strings."""
        prompt = self.render(chat)
        if not self.has_template and chat[-1]["role"] != "assistant" and not continuation.startswith(" "):
            continuation = " " + continuation  # "Assistant:" + " text"
        return prompt, continuation

    def encode_pair(self, chat: Chat, continuation: str) -> tuple[list[int], list[int]]:
        """(prompt ids, continuation ids), split the way lm-eval-harness does: encode the whole text and
        take what follows the prompt's tokens, so merges across the boundary match natural text."""
        prompt, continuation = self.render_pair(chat, continuation)
        p_ids = self.encode(prompt)
        whole = self.tokenizer(prompt + continuation, add_special_tokens=not self.has_template)["input_ids"]
        if whole[: len(p_ids)] != p_ids:  # the boundary merged into the prompt's last token: fall back
            return p_ids, self.tokenizer(continuation, add_special_tokens=False)["input_ids"]
        return p_ids, whole[len(p_ids):]
