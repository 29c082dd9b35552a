"""Reading log p(continuation | prompt) from an echoed /completions answer (echo=True, logprobs=1, max_tokens=1).

The answer lists every token of prompt + continuation, then the one generated token, each with a text offset and
a log-prob. Offsets count characters of the server's own rendering of the text, which is not always the text
sent: llama-cpp-python renders control tokens (<|im_start|>, <|im_end|>) as empty strings and leaves out BOS
tokens; vLLM and OpenAI spell them out. So the tokens are first aligned with the text sent (`ServerView`), each
token's offset is mapped back to a position in that text, and the continuation is every token that starts in
[len(prompt), len(prompt + continuation)). The generated token starts at the end or later and is never counted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

NO_ECHO = ("this server cannot score log-likelihoods (no echo+logprobs on /completions); use a generation scorer "
           "(judge, refusal)")


@dataclass(frozen=True)
class Echo:
    """The echoed tokens of one answer: offsets, log-probs (None for the first) and, when given, their text."""

    offsets: list[int]
    logprobs: list[float | None]
    tokens: list[str] | None

    @classmethod
    def read(cls, logprobs: Any) -> Echo | None:
        """From the answer's choices[0].logprobs (an openai object or a dict); None when it carries none."""
        if logprobs is None:
            return None

        def get(name: str) -> Any:
            return logprobs.get(name) if isinstance(logprobs, dict) else getattr(logprobs, name, None)

        offsets, values, tokens = get("text_offset"), get("token_logprobs"), get("tokens")
        if not offsets or not values or len(offsets) != len(values):
            return None
        if tokens is not None and len(tokens) != len(offsets):
            tokens = None
        return cls([int(o) for o in offsets], list(values), [str(t) for t in tokens] if tokens else None)


@dataclass(frozen=True)
class ServerView:
    """The text sent as a server may render it. `shown` is what its offsets count; `origin[i]` is the position in
    the text sent of shown[i] (origin[len(shown)] = len(text)); `dropped[i]` lists where the special tokens that
    render as nothing just before shown[i] start in the text sent, in order."""

    shown: str
    origin: list[int]
    dropped: dict[int, list[int]] = field(default_factory=dict)

    @classmethod
    def verbatim(cls, text: str) -> ServerView:
        return cls(text, list(range(len(text) + 1)))

    @classmethod
    def without(cls, text: str, specials: Sequence[str]) -> ServerView | None:
        """The text with every special token's string removed (llama-cpp-python's offsets); None if it has none."""
        if not specials:
            return None
        pattern = re.compile("|".join(re.escape(s) for s in sorted(set(specials), key=len, reverse=True)))
        chars: list[str] = []
        origin: list[int] = []
        dropped: dict[int, list[int]] = {}
        pos = 0
        for m in pattern.finditer(text):
            chars += text[pos:m.start()]
            origin += range(pos, m.start())
            dropped.setdefault(len(chars), []).append(m.start())
            pos = m.end()
        if not dropped:
            return None
        chars += text[pos:]
        origin += range(pos, len(text) + 1)
        return cls("".join(chars), origin, dropped)

    def agrees(self, echo: Echo, shift: int) -> bool:
        """Every echoed token with text, `shift` characters in (a BOS spelled out first), matches this view."""
        if echo.tokens is None:
            return shift == 0 and not self.dropped  # no token text to check: trust offsets into the text sent
        checked = 0
        for o, tok in zip(echo.offsets, echo.tokens):
            o -= shift
            if o < 0 or not tok or o >= len(self.shown):
                continue  # before the text, empty (a control token, part of a character), or generated
            if self.shown[o:o + len(tok)] != tok[: len(self.shown) - o]:
                return False
            checked += 1
        return checked > 0

    def positions(self, echo: Echo, shift: int) -> list[int]:
        """Each echoed token's start in the text sent (-1 before it, len(text) or more for generated tokens)."""
        used: dict[int, int] = {}
        out = []
        for i, o in enumerate(echo.offsets):
            o -= shift
            if o < 0:
                out.append(-1)
                continue
            o = min(o, len(self.shown))
            empty = echo.tokens is not None and echo.tokens[i] == ""
            k = used.get(o, 0)
            if empty and k < len(self.dropped.get(o, ())):
                out.append(self.dropped[o][k])  # a control token the server renders as nothing
                used[o] = k + 1
            else:
                out.append(self.origin[o])
        return out


def continuation_logprob(echo: Echo | None, prompt: str, continuation: str, specials: Sequence[str] = (),
                         *, where: str = "endpoint") -> tuple[float, int]:
    """(sum of the continuation tokens' log-probs, how many tokens) from an echoed answer to prompt + continuation.

    `specials` are the tokenizer's special-token strings (for servers that render them as nothing). Raises
    TargetError when the answer has no prompt log-probs or its tokens do not spell the text sent."""
    from persist.errors import TargetError

    if echo is None or all(v is None for v in echo.logprobs):
        raise TargetError(f"{where}: {NO_ECHO}")
    text = prompt + continuation
    views = [v for v in (ServerView.verbatim(text), ServerView.without(text, specials)) if v is not None]
    first = [o for o, t in zip(echo.offsets, echo.tokens or [""] * len(echo.offsets)) if t][:3]
    for shift in dict.fromkeys([0, *first]):
        for view in views:
            if view.agrees(echo, shift):
                starts = view.positions(echo, shift)
                picked = [v for p, v in zip(starts, echo.logprobs) if len(prompt) <= p < len(text)]
                present = [v for v in picked if v is not None]
                if not picked or len(present) < len(picked):
                    raise TargetError(f"{where}: the echoed answer has no log-probs for the continuation; {NO_ECHO}")
                total = float(sum(present))
                if not math.isfinite(total):
                    raise TargetError(f"{where}: the echoed log-probs are not finite ({total}); {NO_ECHO}")
                return total, len(picked)
    shown = "".join(echo.tokens or [])[:60]
    raise TargetError(f"{where}: the echoed tokens ({shown!r}...) do not spell the prompt sent ({text[:60]!r}...), "
                      "so the continuation cannot be located; " + NO_ECHO)
