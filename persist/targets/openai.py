"""OpenAITarget: any OpenAI-compatible endpoint (vLLM, TGI, Ollama, llama.cpp server, OpenAI).

Generation uses /chat/completions. Log-likelihoods use /completions with echo + logprobs (vLLM and TGI offer
this; OpenAI's chat models do not), on a plain transcript of the chat unless the server applies no template.
The API key is read only from an environment variable and never stored.
Spec: openai:MODEL[@BASE_URL] (persist.models.ModelSpec); BASE_URL defaults to $OPENAI_BASE_URL, then
http://127.0.0.1:8000/v1.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from persist.errors import ConfigError, TargetError
from persist.models import ModelSpec
from persist.schema import Chat
from persist.targets.base import GenerationConfig, render_plain, truncate_at_stop

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class OpenAITarget:
    def __init__(self, spec: ModelSpec | str, *, api_key_env: str = "OPENAI_API_KEY", timeout: float = 60.0,
                 retries: int = 3, backoff: float = 1.0, concurrency: int = 8) -> None:
        spec = ModelSpec.parse(spec)
        if not spec.is_endpoint or spec.url is None:
            raise ConfigError(f"{spec.text}: not an endpoint spec (openai:MODEL@URL)")
        self.model, self.base_url = spec.base, spec.url
        self.name = spec.name
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.concurrency = concurrency

    def describe(self) -> dict[str, Any]:
        # The key itself is never part of any description, header or record.
        return {"kind": "openai", "name": self.name, "model": self.model, "base_url": self.base_url,
                "api_key_env": self.api_key_env}

    def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = json.dumps(payload).encode()
        url = f"{self.base_url}{path}"
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            req = urllib.request.Request(url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return json.loads(resp.read().decode())
            except urllib.error.HTTPError as exc:
                body = exc.read().decode(errors="replace")[:200]
                if exc.code in (401, 403):
                    raise TargetError(f"{url}: HTTP {exc.code} (not authorised); set ${self.api_key_env} "
                                      "to a valid key") from None
                if exc.code not in RETRY_STATUS:
                    raise TargetError(f"{url}: HTTP {exc.code}: {body}") from None
                last = f"HTTP {exc.code}: {body}"
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                last = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
            except json.JSONDecodeError:
                raise TargetError(f"{url}: the server did not answer with JSON") from None
        raise TargetError(f"{url}: failed after {self.retries + 1} attempts ({last}); is the server running?")

    def _map(self, fn: Any, items: Sequence[Any]) -> list[Any]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(fn, items))  # map keeps the input order

    def generate(self, chats: Sequence[Chat], config: GenerationConfig) -> list[str]:
        def one(chat: Chat) -> str:
            payload: dict[str, Any] = {"model": self.model, "messages": chat, "max_tokens": config.max_new_tokens,
                                       "temperature": config.temperature, "top_p": config.top_p,
                                       "seed": config.seed}
            if config.stop:
                payload["stop"] = list(config.stop)
            out = self._post("/chat/completions", payload)
            try:
                text = out["choices"][0]["message"]["content"] or ""
            except (KeyError, IndexError, TypeError):
                raise TargetError(f"{self.base_url}: unexpected chat completion answer: {str(out)[:200]}") from None
            return truncate_at_stop(text, config.stop)

        return self._map(one, chats)

    def loglikelihood(self, requests: Sequence[tuple[Chat, str]]) -> list[float]:
        def one(req: tuple[Chat, str]) -> float:
            chat, cont = req
            prompt = render_plain(chat)
            cont = cont if cont.startswith(" ") or chat[-1]["role"] == "assistant" else " " + cont
            out = self._post("/completions", {"model": self.model, "prompt": prompt + cont, "max_tokens": 0,
                                              "echo": True, "logprobs": 1, "temperature": 0})
            try:
                lp = out["choices"][0]["logprobs"]
                offsets, values = lp["text_offset"], lp["token_logprobs"]
            except (KeyError, IndexError, TypeError):
                raise TargetError(f"{self.base_url}: the endpoint returns no prompt log-probs (echo+logprobs); "
                                  "use a generation scorer (judge, refusal) with it") from None
            return float(sum(v for o, v in zip(offsets, values) if o >= len(prompt) and v is not None))

        return self._map(one, requests)
