"""OpenAITarget against real HTTP servers on 127.0.0.1 started by the test: a scripted stub (error shapes, retries,
timeouts, concurrency, the canary) and one backed by the tiny model that answers /completions the way vLLM and
llama-cpp-python do, checked against the local HF target token for token."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from persist.errors import ConfigError, TargetError
from persist.targets.base import GenerationConfig
from persist.targets.echo import Echo, ServerView, continuation_logprob
from persist.targets.openai import CANARY_FLUENT, CANARY_SHUFFLED, OpenAITarget

USER = [{"role": "user", "content": "hi"}]


class Handler(BaseHTTPRequestHandler):
    """Scripted answers. `mode` keys: status (every answer), fail_first (500s before succeeding), retry_after
    (429s with Retry-After: 1 before succeeding), sleep (seconds per answer), logprobs (chars | uniform | fluent |
    none | tiny-verbatim | tiny-llamacpp)."""

    seen: list[dict] = []
    mode: dict = {}
    lock = threading.Lock()
    in_flight = 0
    max_in_flight = 0
    tiny = None  # the tiny HFTarget, for the tiny-* modes

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        if self.path.endswith("/models"):
            return self._send(200, {"object": "list", "data": [{"id": "served-a", "object": "model"},
                                                                {"id": "served-b", "object": "model"}]})
        self._send(404, {"error": {"message": "unknown path"}})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with Handler.lock:
            Handler.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            Handler.in_flight += 1
            Handler.max_in_flight = max(Handler.max_in_flight, Handler.in_flight)
        try:
            time.sleep(Handler.mode.get("sleep", 0))
            self._answer(body)
        finally:
            with Handler.lock:
                Handler.in_flight -= 1

    def _answer(self, body):
        mode = Handler.mode
        if mode.get("fail_first", 0) > 0:
            mode["fail_first"] -= 1
            return self._send(500, {"error": {"message": "try again"}})
        if mode.get("retry_after", 0) > 0:
            mode["retry_after"] -= 1
            return self._send(429, {"error": {"message": "slow down"}}, {"Retry-After": "1"})
        if mode.get("status", 200) != 200:
            return self._send(mode["status"], {"error": {"message": "no", "type": "x"}})
        if self.path.endswith("/chat/completions"):
            last = body["messages"][-1]["content"]
            return self._send(200, {"id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                                    "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                        "role": "assistant", "content": f"echo: {last} STOP x"}}]})
        if self.path.endswith("/completions"):
            text = body["prompt"]
            kind = mode.get("logprobs", "chars")
            logprobs = None if kind == "none" else tiny_echo(text, kind) if kind.startswith("tiny") else \
                char_echo(text, kind)
            return self._send(200, {"id": "c", "object": "text_completion", "created": 0, "model": body["model"],
                                    "choices": [{"index": 0, "finish_reason": "length", "logprobs": logprobs,
                                                 "text": text + "X"}]})
        self._send(404, {"error": {"message": "unknown path"}})

    def _send(self, status, payload, headers=None):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up first (the timeout test)
            pass


def char_echo(text: str, kind: str) -> dict:
    """One token per character, then one generated token "X" (log-prob -9, never to be counted). chars: -0.5 per
    token; uniform: -10.8 everywhere (llama.cpp without --logits_all); fluent: -0.2 in the canary's fluent sentence,
    -3 elsewhere."""
    per = {"chars": -0.5, "uniform": -10.8, "nan": float("nan")}.get(kind, -0.2 if CANARY_FLUENT in text else -3.0)
    return {"text_offset": list(range(len(text) + 1)), "token_logprobs": [None] + [per] * (len(text) - 1) + [-9.0],
            "tokens": list(text) + ["X"], "top_logprobs": None}


def tiny_echo(text: str, kind: str) -> dict:
    """The tiny model's real log-probs, echoed as vLLM does (tiny-verbatim: special tokens spelled out) or as
    llama-cpp-python 0.3 does (tiny-llamacpp: BOS tokens left out, other special tokens rendered as nothing,
    offsets counting the rest), plus the greedy next token."""
    import torch

    tok, model = Handler.tiny.tokenizer, Handler.tiny.model
    ids = tok(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
    ids = ids + [int(logp[-1].argmax())]
    values = [None] + [float(logp[i - 1, ids[i]]) for i in range(1, len(ids))]
    skip = kind == "tiny-llamacpp"
    # llama-cpp-python also leaves out every BOS token; SmolLM2's BOS is <|im_start|>, so here it is too
    keep = [i for i, t in enumerate(ids) if not (skip and t == tok.convert_tokens_to_ids("<|im_start|>"))]
    tokens = [tok.decode([ids[i]], skip_special_tokens=skip) for i in keep]
    offsets = [len(tok.decode(ids[:i], skip_special_tokens=skip)) for i in keep]
    return {"text_offset": offsets, "token_logprobs": [values[i] for i in keep], "tokens": tokens,
            "top_logprobs": None}


@pytest.fixture()
def server():
    Handler.seen.clear()
    Handler.mode = {}
    Handler.in_flight = Handler.max_in_flight = 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def target(url: str, **kwargs) -> OpenAITarget:
    with pytest.warns(UserWarning, match="no local tokenizer"):
        return OpenAITarget(f"openai:m@{url}", **kwargs)


def test_generate_in_order_with_key_from_env(server, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-planted-secret")
    t = target(server, api_key_env="MY_KEY")
    chats = [[{"role": "user", "content": f"q{i}"}] for i in range(5)]
    out = t.generate(chats, GenerationConfig(max_new_tokens=5, stop=("STOP",)))
    assert out == [f"echo: q{i} " for i in range(5)]
    assert all(s["auth"] == "Bearer sk-planted-secret" for s in Handler.seen)
    assert all(s["body"]["max_tokens"] == 5 and s["body"]["stop"] == ["STOP"] for s in Handler.seen)
    assert "sk-planted-secret" not in json.dumps(t.describe())


def test_loglikelihood_sums_only_the_continuation_and_never_asks_for_unbounded_generation(server):
    t = target(server, canary=False)
    [lp] = t.loglikelihood([(USER, "abc")])
    assert lp == pytest.approx(-0.5 * len(" abc"))  # plain transcript: "Assistant:" + " abc"; not the -9 token
    [req] = Handler.seen
    assert req["body"]["prompt"] == "User: hi\n\nAssistant: abc"
    assert (req["body"]["max_tokens"], req["body"]["echo"], req["body"]["logprobs"]) == (1, True, 1)
    assert req["body"]["temperature"] == 0
    assert t.describe()["rendering"] == "plain"


@pytest.mark.parametrize("shape", ["tiny-verbatim", "tiny-llamacpp"])
def test_chat_template_scores_equal_the_local_target(server, tiny_target, tiny_folder, shape):
    """Same prompt, same tokens, same numbers as HFTarget, whether the server spells special tokens in its offsets
    (vLLM) or renders them as nothing (llama-cpp-python); a continuation that ends in <|im_end|> (the judge's)
    keeps that token."""
    Handler.tiny, Handler.mode["logprobs"] = tiny_target, shape
    t = OpenAITarget(f"openai:m@{server}", tokenizer=str(tiny_folder), canary=False)
    assert t.describe()["rendering"] == f"chat_template:{tiny_folder}"
    prefill = [{"role": "user", "content": "Tell me a secret."}, {"role": "assistant", "content": "Sure, here is"}]
    system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
    requests = [(USER, "Hello there, how can I help?"), (prefill, " a small one."), (system, "Blue."),
                (system, "42<|im_end|>"), (USER, "No.")]
    remote = t.loglikelihood(requests)
    assert remote == pytest.approx(tiny_target.loglikelihood(requests), abs=1e-4)
    [sent] = [s["body"]["prompt"] for s in Handler.seen if s["body"]["prompt"].endswith("how can I help?")]
    assert sent == tiny_target.render(USER) + "Hello there, how can I help?"
    # llama-cpp-python's offsets skip the special tokens' text, so they only fit after mapping back
    assert ServerView.verbatim(sent).agrees(Echo.read(tiny_echo(sent, shape)), 0) == (shape == "tiny-verbatim")


def test_canary_refuses_echoed_logprobs_that_cannot_tell_order(server):
    Handler.mode["logprobs"] = "uniform"
    t = target(server)
    with pytest.raises(TargetError, match="echoed log-probs are unusable.*--logits_all true") as err:
        t.loglikelihood([(USER, "abc")])
    assert "\n" not in str(err.value)
    assert sorted(s["body"]["prompt"].split("Assistant: ")[1] for s in Handler.seen) == sorted(
        [CANARY_FLUENT, CANARY_SHUFFLED])  # the canary only: nothing was scored


def test_canary_passes_once_per_target(server):
    Handler.mode["logprobs"] = "fluent"
    t = target(server)
    t.loglikelihood([(USER, "abc")])
    t.loglikelihood([(USER, "abd")])
    assert len(Handler.seen) == 4  # two canary sentences, then one request per call
    assert t.canary["margin_per_token"] == pytest.approx(2.8)


def test_shuffled_canary_has_the_same_words():
    assert sorted(CANARY_SHUFFLED.split()) == sorted(CANARY_FLUENT.split())
    assert CANARY_SHUFFLED != CANARY_FLUENT


def test_no_prompt_logprobs_is_a_clear_error(server):
    Handler.mode["logprobs"] = "none"
    with pytest.raises(TargetError, match=r"cannot score log-likelihoods \(no echo\+logprobs on /completions\); "
                                          r"use a generation scorer"):
        target(server, canary=False).loglikelihood([(USER, "abc")])


def test_server_error_on_echo_requests_says_how_to_fix(server):
    Handler.mode["status"] = 500
    with pytest.raises(TargetError, match="HTTP 500 after 1 attempt: no; if this is llama.cpp's server, start it "
                                          "with --logits_all true"):
        target(server, retries=0).loglikelihood([(USER, "abc")])


def test_non_finite_logprobs_are_refused(server):
    Handler.mode["logprobs"] = "nan"
    for canary in (True, False):
        with pytest.raises(TargetError, match=r"echoed log-probs are not finite \(nan\)"):
            target(server, canary=canary).loglikelihood([(USER, "abc")])


def test_echo_with_a_spelled_out_bos_first():
    echo = Echo.read({"text_offset": [0, 3, 5, 11], "token_logprobs": [None, -1.0, -2.0, -7.0],
                      "tokens": ["<s>", "Hi", " there", "X"]})
    assert continuation_logprob(echo, "Hi", " there") == (-2.0, 1)


def test_retries_then_succeeds(server):
    Handler.mode["fail_first"] = 2
    t = target(server, retries=3)
    assert t.generate([[{"role": "user", "content": "x"}]], GenerationConfig())[0].startswith("echo: x")
    assert len(Handler.seen) == 3


def test_retry_after_is_honoured(server):
    Handler.mode["retry_after"] = 1
    t = target(server, retries=2)
    start = time.monotonic()
    assert t.generate([USER], GenerationConfig())[0].startswith("echo: hi")
    assert time.monotonic() - start >= 0.95  # the client waited the second the server asked for
    assert len(Handler.seen) == 2


def test_concurrency_is_bounded_and_order_kept(server):
    Handler.mode["sleep"] = 0.15
    t = target(server, concurrency=3)
    chats = [[{"role": "user", "content": f"q{i}"}] for i in range(9)]
    assert t.generate(chats, GenerationConfig()) == [f"echo: q{i} STOP x" for i in range(9)]
    assert Handler.max_in_flight == 3


@pytest.mark.parametrize("status,expect,calls", [(401, "HTTP 401 \\(not authorised\\); set \\$OPENAI_API_KEY", 1),
                                                  (403, "HTTP 403 \\(not authorised\\)", 1),
                                                  (404, "HTTP 404 \\(no\\); is 'm' the served model name\\? "
                                                        "This server serves: served-a, served-b", 1),
                                                  (500, "HTTP 500 after 3 attempts: no", 3),
                                                  (400, "HTTP 400: no", 1)])
def test_http_errors_are_one_line_user_errors(server, status, expect, calls):
    Handler.mode["status"] = status
    t = target(server, retries=2)
    with pytest.raises(TargetError, match=expect) as err:
        t.generate([[{"role": "user", "content": "x"}]], GenerationConfig())
    assert "\n" not in str(err.value)
    assert len([s for s in Handler.seen if s["path"].endswith("/completions")]) == calls


def test_slow_server_times_out_in_one_line(server):
    Handler.mode["sleep"] = 3
    t = target(server, timeout=0.5, retries=1)
    start = time.monotonic()
    with pytest.raises(TargetError, match=r"no answer within 0.5 s \(2 attempts\)") as err:
        t.generate([USER], GenerationConfig())
    assert "\n" not in str(err.value)
    assert time.monotonic() - start < 3  # two 0.5 s waits and one back-off, not the server's 3 s


def test_unreachable_endpoint():
    t = target("http://127.0.0.1:9/v1", retries=1, timeout=2)
    with pytest.raises(TargetError, match="cannot connect .* is the server running"):
        t.generate([[{"role": "user", "content": "x"}]], GenerationConfig())


def test_bad_timeout_setting_is_a_config_error(monkeypatch):
    monkeypatch.setenv("PERSIST_OPENAI_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match="PERSIST_OPENAI_TIMEOUT='soon': give the seconds"):
        OpenAITarget("openai:m@http://127.0.0.1:9/v1")
    monkeypatch.setenv("PERSIST_OPENAI_TIMEOUT", "5")
    monkeypatch.setenv("PERSIST_OPENAI_CONCURRENCY", "0")
    with pytest.raises(ConfigError, match="PERSIST_OPENAI_CONCURRENCY='0'"):
        OpenAITarget("openai:m@http://127.0.0.1:9/v1")


def test_tokenizer_option_reaches_the_endpoint(tiny_folder):
    from persist.models import LoadOptions
    from persist.targets import open_target

    t = open_target("openai:m@http://127.0.0.1:9/v1", LoadOptions(tokenizer=str(tiny_folder)))
    assert t.describe()["rendering"] == f"chat_template:{tiny_folder}"
    with pytest.raises(ConfigError, match="--tokenizer /no/such: .*no such file"):
        open_target("openai:m@http://127.0.0.1:9/v1", LoadOptions(tokenizer="/no/such"))


def test_planted_key_never_reaches_the_run_folder(server, tmp_path, tiny_folder):
    """A whole CLI run against the endpoint: the key goes in the Authorization header and nowhere else; --tokenizer
    reaches the target and the header records the rendering."""
    from tests.conftest import run_cli

    secret = "sk-planted-7f3a9c1e5b"
    proc = run_cli("score", "--model", f"openai:m@{server}", "--suite", "harmful-requests", "--scorer", "refusal",
                   "--refusal-classifier", "rules", "--limit", "4", "--max-new-tokens", "8", "--runs-dir", str(tmp_path / "runs"), "--name", "k",
                   "--tokenizer", str(tiny_folder), env={"OPENAI_API_KEY": secret, "PERSIST_HOME": str(tmp_path / "home")})
    assert proc.returncode == 0, proc.stderr
    assert Handler.seen and all(s["auth"] == f"Bearer {secret}" for s in Handler.seen)
    files = [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"header.json", "records.jsonl"}
    header = json.loads((tmp_path / "runs" / "k" / "header.json").read_text())
    assert header["models"]["model"]["rendering"] == f"chat_template:{tiny_folder}"
    for p in files:
        assert secret.encode() not in p.read_bytes(), p
    assert secret not in proc.stdout + proc.stderr
