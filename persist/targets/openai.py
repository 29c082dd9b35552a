"""OpenAITarget: any OpenAI-compatible endpoint (vLLM, TGI, llama.cpp's server, Ollama, OpenAI), on the official
`openai` client.

Generation uses /chat/completions (the server applies its own chat template). Log-likelihoods use /completions
with echo + logprobs and max_tokens=1 (never 0: llama.cpp's server reads 0 as "no limit"), on the same prompt the
local HF target scores: the model's chat template from a tokenizer found locally (the served name as a bundled
model, folder or cached hub id, or --tokenizer), else a plain transcript, and describe() says which. Before the
first log-likelihood a canary checks that the echoed log-probs mean something (persist.targets.echo reads them).
The client retries 408/409/429/5xx and connection errors, honouring Retry-After; requests run `concurrency` at a
time, in order. The API key is read only from an environment variable and never stored.
Spec: openai:MODEL[@BASE_URL] (persist.models.ModelSpec); BASE_URL defaults to $OPENAI_BASE_URL, then
http://127.0.0.1:8000/v1. Each request may take $PERSIST_OPENAI_TIMEOUT seconds (default 60), and
$PERSIST_OPENAI_CONCURRENCY of them (default 8) run at once.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from persist.errors import ConfigError, PersistError, TargetError
from persist.models import ModelSpec
from persist.schema import Chat
from persist.targets.base import GenerationConfig, truncate_at_stop
from persist.targets.echo import Echo, continuation_logprob
from persist.targets.encoding import ChatEncoder

T = TypeVar("T")

# The canary: a fluent sentence against the same words in a fixed shuffled order, scored as a reply. A usable
# model prefers the fluent order by several nats per token (SmolLM2-135M: see tests/test_llamacpp_server.py); a
# server that echoes the same log-prob for every token (llama.cpp without --logits_all: about -10.8 = log 1/49152)
# or misaligned ones scores both alike. Per token, so a different token count cannot pass a broken server.
CANARY_CHAT: Chat = [{"role": "user", "content": "Tell me one fact about Paris."}]
CANARY_FLUENT = "The capital of France is Paris, and the river that runs through it is the Seine."
CANARY_SHUFFLED = "through the Seine. of it river Paris, is that The and capital runs the France is"
CANARY_MARGIN = 1.0  # nats per token the fluent sentence must gain over the shuffled one
ECHO_HINT = ("; if this is llama.cpp's server, start it with --logits_all true; otherwise use a generation scorer "
             "(judge, refusal)")


def env_number(name: str, default: str, what: str) -> float:
    """A positive number from the environment (the endpoint's timeout and concurrency)."""
    text = os.environ.get(name, default)
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ConfigError(f"{name}={text!r}: give {what}")
    return value


class OpenAITarget:
    """An OpenAI-compatible endpoint behind the Target interface."""

    def __init__(self, spec: ModelSpec | str, *, api_key_env: str = "OPENAI_API_KEY", timeout: float | None = None,
                 retries: int = 2, concurrency: int | None = None, tokenizer: str | None = None,
                 trust_remote_code: bool = False, canary: bool = True) -> None:
        import openai

        spec = ModelSpec.parse(spec)
        if not spec.is_endpoint or spec.url is None:
            raise ConfigError(f"{spec.text}: not an endpoint spec (openai:MODEL@URL)")
        if (concurrency is not None and concurrency < 1) or retries < 0:
            raise ConfigError(f"{spec.text}: concurrency must be >= 1 and retries >= 0")
        self.model, self.base_url, self.name = spec.base, spec.url, spec.name
        self.api_key_env = api_key_env
        self.timeout = timeout or env_number("PERSIST_OPENAI_TIMEOUT", "60", "the seconds to wait for one answer")
        self.retries = retries
        self.concurrency = concurrency or int(env_number("PERSIST_OPENAI_CONCURRENCY", "8",
                                                         "how many requests may be in flight at once"))
        self.check_canary = canary  # False only for servers known to be sound (tests of the offsets themselves)
        self.canary: dict[str, float] | None = None
        self._canary_lock = threading.Lock()
        self.client = openai.OpenAI(base_url=self.base_url, api_key=os.environ.get(api_key_env) or "EMPTY",
                                    timeout=self.timeout, max_retries=retries)
        found = local_tokenizer(self.model, tokenizer, trust_remote_code=trust_remote_code)
        self.tokenizer = found[0] if found else None
        # ChatEncoder(None) renders plain transcripts, as HFTarget does for a tokenizer without a chat template.
        self.encoder = ChatEncoder(self.tokenizer)
        self.has_template = self.encoder.has_template  # read by the judge for its end-of-turn string
        self.rendering = f"chat_template:{found[1]}" if found and self.has_template else "plain"
        self.specials = special_strings(self.tokenizer)
        if found is None:
            warnings.warn(f"{self.name}: no local tokenizer for {self.model!r}, so log-likelihoods are scored on a "
                          "plain transcript, not the model's chat template; pass --tokenizer SPEC (a bundled name, "
                          "folder or hub id) to score what the local model would", stacklevel=2)

    def describe(self) -> dict[str, Any]:
        # The key itself is never part of any description, header or record.
        return {"kind": "openai", "name": self.name, "model": self.model, "base_url": self.base_url,
                "api_key_env": self.api_key_env, "rendering": self.rendering}

    # ------------------------------------------------------------ requests

    def _call(self, fn: Callable[[], T], *, echo: bool = False) -> T:
        """One request through the client (which retries); its failures as one-line TargetErrors. `echo`: an
        echo+logprobs request, whose server errors most often mean the server cannot give prompt log-probs."""
        import openai

        url = self.base_url
        attempts = f"{self.retries + 1} attempt" + ("s" if self.retries else "")
        try:
            return fn()
        except openai.APITimeoutError:
            raise TargetError(f"{url}: no answer within {self.timeout:g} s ({attempts}); the server is overloaded "
                              "or stuck: check its log, raise PERSIST_OPENAI_TIMEOUT, or lower "
                              "PERSIST_OPENAI_CONCURRENCY (a single-threaded server such as llama.cpp's queues "
                              "requests)") from None
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            raise TargetError(f"{url}: cannot connect ({type(cause).__name__}: {str(cause)[:120]}) after "
                              f"{attempts}; is the server running at that address?") from None
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise TargetError(f"{url}: HTTP {exc.status_code} (not authorised); set ${self.api_key_env} to a valid "
                              "key for this server") from None
        except openai.NotFoundError as exc:
            raise TargetError(f"{url}: HTTP 404 ({error_text(exc)}); is {self.model!r} the served model name? "
                              f"This server serves: {self.served_models()}") from None
        except openai.APIStatusError as exc:
            text = error_text(exc)
            hint = ECHO_HINT if "logits_all" in text or (echo and exc.status_code >= 500) else ""
            tries = f" after {attempts}" if exc.status_code in (408, 409, 429) or exc.status_code >= 500 else ""
            raise TargetError(f"{url}: HTTP {exc.status_code}{tries}: {text}{hint}") from None

    def served_models(self) -> str:
        try:
            names = [m.id for m in self.client.with_options(max_retries=0).models.list()]
        except Exception:  # the listing is only a hint in an error message; any failure leaves it out
            return "(GET /models failed)"
        return ", ".join(names) or "(none listed)"

    def _map(self, fn: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
        if len(items) <= 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(fn, items))  # at most `concurrency` in flight; map keeps the input order

    # ------------------------------------------------------------ generation

    def generate(self, chats: Sequence[Chat], config: GenerationConfig) -> list[str]:
        def one(chat: Chat) -> str:
            extra: dict[str, Any] = {"stop": list(config.stop)} if config.stop else {}
            out = self._call(lambda: self.client.chat.completions.create(
                model=self.model, messages=chat, max_tokens=config.max_new_tokens,  # type: ignore[arg-type]
                temperature=config.temperature, top_p=config.top_p, seed=config.seed, **extra))
            try:
                text = out.choices[0].message.content or ""
            except (AttributeError, IndexError, TypeError):
                raise TargetError(f"{self.base_url}: unexpected chat completion answer: {str(out)[:200]}") from None
            return truncate_at_stop(text, config.stop)

        return self._map(one, chats)

    # ------------------------------------------------------------ log-likelihood

    def score_text(self, prompt: str, continuation: str) -> tuple[float, int]:
        """(log p(continuation | prompt) in nats, number of continuation tokens) from one echoed request; the
        prompt as rendered by self.encoder.render_pair."""
        # max_tokens=1, not 0: one generated token, which the offsets leave out of the sum.
        out = self._call(lambda: self.client.completions.create(
            model=self.model, prompt=prompt + continuation, echo=True, logprobs=1, max_tokens=1, temperature=0),
            echo=True)
        try:
            choice = out.choices[0]
        except (AttributeError, IndexError, TypeError):
            raise TargetError(f"{self.base_url}: unexpected completion answer: {str(out)[:200]}") from None
        return continuation_logprob(Echo.read(choice.logprobs), prompt, continuation, self.specials,
                                    where=self.base_url)

    def loglikelihood(self, requests: Sequence[tuple[Chat, str]]) -> list[float]:
        if not requests:
            return []
        self.run_canary()
        # Rendered here, before the threads: only HTTP requests run concurrently.
        pairs = [self.encoder.render_pair(chat, cont) for chat, cont in requests]
        return self._map(lambda pair: self.score_text(*pair)[0], pairs)

    def run_canary(self) -> dict[str, float]:
        """Score the fluent and the shuffled sentence once per target; refuse an endpoint that cannot tell them
        apart by CANARY_MARGIN nats per token."""
        with self._canary_lock:
            if self.canary is not None or not self.check_canary:
                return self.canary or {}
            pairs = [self.encoder.render_pair(CANARY_CHAT, c) for c in (CANARY_FLUENT, CANARY_SHUFFLED)]
            (fluent, nf), (shuffled, ns) = self._map(lambda pair: self.score_text(*pair), pairs)
            result = {"fluent": fluent, "shuffled": shuffled, "margin_per_token": fluent / nf - shuffled / ns}
            if not result["margin_per_token"] >= CANARY_MARGIN:  # NaN fails too
                raise TargetError(
                    f"{self.base_url}: the endpoint's echoed log-probs are unusable: a fluent sentence scores "
                    f"{fluent / nf:.2f} nats/token and the same words shuffled {shuffled / ns:.2f} (a usable model "
                    f"prefers the fluent one by >= {CANARY_MARGIN:g}); for llama.cpp's server start it with "
                    "--logits_all true (llama-cpp-python also misaligns them when the prompt does not start with "
                    "BOS, so give a chat-template tokenizer with --tokenizer); or use a generation scorer "
                    "(judge, refusal)")
            self.canary = result
            return result


def error_text(exc: Any) -> str:
    """The server's own error message, short."""
    body = getattr(exc, "body", None)
    msg = body.get("message") if isinstance(body, dict) else None
    return " ".join(str(msg or body or exc).split())[:200]


def special_strings(tokenizer: Any) -> list[str]:
    """The strings of a tokenizer's special tokens (a server may render them as nothing in its offsets)."""
    if tokenizer is None:
        return []
    out = set(getattr(tokenizer, "all_special_tokens", []) or [])
    for tok in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(tok, "special", False):
            out.add(str(tok.content))
    return sorted(s for s in out if s)


def local_tokenizer(served: str, named: str | None, *, trust_remote_code: bool = False) -> tuple[Any, str] | None:
    """(tokenizer, its name) for an endpoint: `named` (--tokenizer: must load), else the served model name when it
    is a bundled model, a local folder or .gguf, or a hub id in the local cache; None when nothing local fits."""
    if named:
        return load_tokenizer(named, trust_remote_code=trust_remote_code, local_only=False), named
    try:
        return load_tokenizer(served, trust_remote_code=trust_remote_code, local_only=True), served
    except PersistError:
        return None


def load_tokenizer(text: str, *, trust_remote_code: bool, local_only: bool) -> Any:
    """A tokenizer from a folder (tokenizer files suffice), a .gguf, a bundled name or a hub id (`local_only`: from
    the local cache only). ConfigError when it cannot be loaded."""
    from persist import models

    where: str
    path = Path(text).expanduser()
    if path.is_dir():
        where = str(path)
    else:
        try:
            spec = ModelSpec.parse(text)
        except PersistError as exc:
            raise ConfigError(f"--tokenizer {text}: {exc}") from None
        if spec.is_endpoint:
            raise ConfigError(f"--tokenizer {text}: name a local tokenizer (bundled name, folder, .gguf or hub id), "
                              "not an endpoint")
        # A .gguf gives its tokenizer directly (no dequantising of the weights); a bundled name the folder that
        # the HF target loads.
        where = spec.base if spec.kind in ("hub", "gguf") else models.resolve(spec).path
    from transformers import AutoTokenizer

    models.quiet_transformers()
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "local_files_only": local_only}
    if where.endswith(".gguf"):
        kwargs["gguf_file"] = Path(where).name
        where = str(Path(where).expanduser().parent)
    try:
        return AutoTokenizer.from_pretrained(where, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"--tokenizer {text}: cannot load a tokenizer from {where} "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); pass a model folder, bundled "
                          "name or hub id") from None
