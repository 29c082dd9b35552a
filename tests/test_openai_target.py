"""OpenAITarget against a real HTTP server on 127.0.0.1 started by the test."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from persist.errors import TargetError
from persist.targets.base import GenerationConfig
from persist.targets.openai import OpenAITarget


class Handler(BaseHTTPRequestHandler):
    seen: list[dict] = []
    mode = {"status": 200, "fail_first": 0}

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Handler.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if Handler.mode["fail_first"] > 0:
            Handler.mode["fail_first"] -= 1
            return self._send(500, {"error": "try again"})
        if Handler.mode["status"] != 200:
            return self._send(Handler.mode["status"], {"error": "no"})
        if self.path.endswith("/chat/completions"):
            last = body["messages"][-1]["content"]
            return self._send(200, {"choices": [{"message": {"role": "assistant", "content": f"echo: {last} STOP x"}}]})
        if self.path.endswith("/completions"):
            text = body["prompt"]
            # One "token" per character; log-prob -0.5 each, first token has no log-prob (as vLLM returns).
            return self._send(200, {"choices": [{"logprobs": {
                "text_offset": list(range(len(text))),
                "token_logprobs": [None] + [-0.5] * (len(text) - 1),
                "tokens": list(text)}}]})
        self._send(404, {"error": "unknown path"})

    def _send(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture()
def server():
    Handler.seen.clear()
    Handler.mode.update(status=200, fail_first=0)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def test_generate_in_order_with_key_from_env(server, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-planted-secret")
    target = OpenAITarget(f"openai:m@{server}", api_key_env="MY_KEY")
    chats = [[{"role": "user", "content": f"q{i}"}] for i in range(5)]
    out = target.generate(chats, GenerationConfig(max_new_tokens=5, stop=("STOP",)))
    assert out == [f"echo: q{i} " for i in range(5)]
    assert all(s["auth"] == "Bearer sk-planted-secret" for s in Handler.seen)
    assert "sk-planted-secret" not in json.dumps(target.describe())


def test_loglikelihood_sums_only_the_continuation(server):
    target = OpenAITarget(f"openai:m@{server}")
    chat = [{"role": "user", "content": "hi"}]
    [lp] = target.loglikelihood([(chat, "abc")])
    assert lp == pytest.approx(-0.5 * len(" abc"))


def test_retries_then_succeeds(server):
    Handler.mode["fail_first"] = 2
    target = OpenAITarget(f"openai:m@{server}", retries=3, backoff=0.01)
    assert target.generate([[{"role": "user", "content": "x"}]], GenerationConfig())[0].startswith("echo: x")
    assert len(Handler.seen) == 3


@pytest.mark.parametrize("status,expect,calls", [(401, "not authorised", 1), (500, "failed after 3 attempts", 3),
                                                  (400, "HTTP 400", 1)])
def test_http_errors_are_user_errors(server, status, expect, calls):
    Handler.mode["status"] = status
    target = OpenAITarget(f"openai:m@{server}", retries=2, backoff=0.01)
    with pytest.raises(TargetError, match=expect):
        target.generate([[{"role": "user", "content": "x"}]], GenerationConfig())
    assert len(Handler.seen) == calls


def test_unreachable_endpoint():
    target = OpenAITarget("openai:m@http://127.0.0.1:9/v1", retries=1, backoff=0.01, timeout=2)
    with pytest.raises(TargetError, match="is the server running"):
        target.generate([[{"role": "user", "content": "x"}]], GenerationConfig())


def test_planted_key_never_reaches_the_run_folder(server, tmp_path):
    """A whole CLI run against the endpoint: the key goes in the Authorization header and nowhere else."""
    from tests.conftest import run_cli

    secret = "sk-planted-7f3a9c1e5b"
    proc = run_cli("score", "--model", f"openai:m@{server}", "--suite", "harmful-requests", "--scorer", "refusal",
                   "--limit", "4", "--max-new-tokens", "8", "--runs-dir", str(tmp_path / "runs"), "--name", "k",
                   env={"OPENAI_API_KEY": secret, "PERSIST_HOME": str(tmp_path / "home")})
    assert proc.returncode == 0, proc.stderr
    assert Handler.seen and all(s["auth"] == f"Bearer {secret}" for s in Handler.seen)
    files = [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"header.json", "records.jsonl"}
    for p in files:
        assert secret.encode() not in p.read_bytes(), p
    assert secret not in proc.stdout + proc.stderr
