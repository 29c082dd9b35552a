"""The Target interface: the model under test, behind two batched methods.

    loglikelihood([(chat, continuation), ...]) -> [log p(continuation | chat)] in nats
    generate([chat, ...], GenerationConfig)    -> [completion text]

Both take whole request lists so a backend can sort, batch and restore order. A chat whose last message has
role "assistant" is a prefill: the continuation (or generation) extends that assistant turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from persist.errors import ConfigError
from persist.schema import Chat

# Rendering for tokenizers without a chat template (e.g. base models such as Gemma-3-270M).
PLAIN_ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}
PLAIN_STOP = ("\nUser:", "\nSystem:")


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings. temperature 0 = greedy (deterministic, batch-invariant in fp32)."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d


class Target(Protocol):
    """Anything that can be scored: a local HF model, an OpenAI-compatible endpoint, a test double."""

    name: str

    def loglikelihood(self, requests: Sequence[tuple[Chat, str]]) -> list[float]: ...

    def generate(self, chats: Sequence[Chat], config: GenerationConfig) -> list[str]: ...

    def describe(self) -> dict[str, Any]: ...


def render_plain(chat: Chat) -> str:
    """A neutral transcript for models without a chat template; ends ready for the assistant's words."""
    lines = [f"{PLAIN_ROLE_NAMES[m['role']]}: {m['content']}" for m in chat]
    if chat and chat[-1]["role"] == "assistant":
        return "\n\n".join(lines)
    return "\n\n".join(lines + ["Assistant:"])


def truncate_at_stop(text: str, stops: Sequence[str]) -> str:
    cut = len(text)
    for s in stops:
        i = text.find(s)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]
