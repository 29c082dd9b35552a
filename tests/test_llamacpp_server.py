"""OpenAITarget against a real engine: llama.cpp's OpenAI-compatible server (llama-cpp-python[server], built from
source once by `make test-server`) serving the bundled SmolLM2 GGUF on 127.0.0.1.

Run with `make test-server` (or `pytest -s -m server` once llama-cpp-python[server] is installed); `-s` shows the
measured figures (server start, canary, agreement with the local target). The default run leaves these tests out.

Cost: llama-cpp-python sorts the whole 49k vocabulary in Python for every echoed token (~25-45 ms a token on two
cores), so one log-likelihood request costs seconds; the tests score few requests.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from persist.errors import TargetError
from persist.models import ModelSpec
from persist.targets.base import GenerationConfig
from persist.targets.openai import CANARY_MARGIN, OpenAITarget

pytestmark = pytest.mark.server

SERVED = "smollm2-135m-instruct"  # the model alias: a bundled name, so the target finds its tokenizer locally
API_KEY = "sk-persist-llamacpp-test"
KEY_ENV = "PERSIST_TEST_LLAMACPP_KEY"
ITEMS = 8  # traits items in the agreement test (first aligned and first misaligned reference of each)
# Per-reference agreement of log p(reference | prompt), llama.cpp (Q4_1 kernels, activations quantised to 8 bits
# in its dot products) vs the local HF target (the same GGUF dequantised to fp32). The error is per token, so it
# grows with the reference: measured on 16 traits references (2026-12-02, local mean -240 nats) max 1.77 nats,
# mean 0.76, i.e. at most 0.74% of |log p|. The bound is twice that, plus 0.5 nats for short continuations (the
# judge's "50<|im_end|>").
LOGLIK_RELATIVE_TOLERANCE = 0.015
LOGLIK_ABSOLUTE_TOLERANCE_NATS = 0.5


def tolerance(local: float) -> float:
    return LOGLIK_ABSOLUTE_TOLERANCE_NATS + LOGLIK_RELATIVE_TOLERANCE * abs(local)
JUDGE_NUMBERS = ("0", "10", "50", "90", "100")  # a slice of the EM judge's 101 candidates (each costs seconds)


def smollm2_gguf() -> Path:
    from persist.models import bundled_gguf

    return bundled_gguf(SERVED)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """`python -m llama_cpp.server` in a subprocess; start() waits until GET /v1/models answers."""

    def __init__(self, log: Path, *, logits_all: bool = True) -> None:
        self.port = free_port()
        self.log = log
        self.logits_all = logits_all
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 180) -> float:
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf()), "--model_alias", SERVED,
               "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", "2048",
               "--logits_all", "true" if self.logits_all else "false", "--chat_format", "chatml",
               "--api_key", API_KEY, "--verbose", "false"]
        start = time.monotonic()
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        request = urllib.request.Request(f"{self.url}/models", headers={"Authorization": f"Bearer {API_KEY}"})
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited ({self.proc.returncode}): {self.tail()}")
            try:
                with urllib.request.urlopen(request, timeout=5) as resp:
                    if SERVED in json.loads(resp.read())["data"][0]["id"]:
                        return time.monotonic() - start
            except OSError:
                time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"llama.cpp server not ready after {timeout:g} s: {self.tail()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else "(no log)"


def require_server_package() -> None:
    """Fails (never skips) without the server package: `make test-server` installs it before running these."""
    try:
        import llama_cpp.server.app  # noqa: F401
    except ImportError as exc:
        pytest.fail(f"needs llama-cpp-python[server] ({exc}); run these tests with `make test-server`")


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    require_server_package()
    server = LlamaServer(tmp_path_factory.mktemp("llamacpp") / "server.log")
    print(f"\n[llama.cpp] server ready in {server.start():.1f} s at {server.url}")
    yield server
    server.stop()


@pytest.fixture()
def key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, API_KEY)


def endpoint(server: LlamaServer, **kwargs) -> OpenAITarget:
    # A serial server: few requests in flight, and a generous timeout for the queue.
    options = {"api_key_env": KEY_ENV, "timeout": 600, "concurrency": 2, **kwargs}
    return OpenAITarget(f"openai:{SERVED}@{server.url}", **options)


def traits_items(n: int) -> list:
    from persist.suites import get_suite, select

    return select(get_suite("traits").load(), n)


def test_greedy_generation_is_deterministic_and_keeps_order(llama_server, key):
    target = endpoint(llama_server)
    chats = [[{"role": "user", "content": q}] for q in ("What is the capital of France?", "Name a colour.",
                                                          "Say hello in French.")]
    config = GenerationConfig(max_new_tokens=24)
    together = target.generate(chats, config)
    alone = [target.generate([c], config)[0] for c in chats]
    assert together == alone
    assert all(a.strip() for a in together), together
    assert len(set(together)) == 3


def test_canary_and_rendering(llama_server, key):
    target = endpoint(llama_server)
    assert target.describe()["rendering"] == f"chat_template:{SERVED}"
    canary = target.run_canary()
    print(f"\n[llama.cpp] canary (chat template): {canary}")
    assert canary["margin_per_token"] >= CANARY_MARGIN
    assert canary["fluent"] > canary["shuffled"]


def test_loglikelihood_agrees_with_the_local_target(llama_server, key, smollm2_target):
    from persist.runner import clean_variant
    from persist.scoring import prompt_chat

    target = endpoint(llama_server)
    requests = []
    for item in traits_items(ITEMS):
        chat = prompt_chat(clean_variant(item))
        requests += [(chat, item.aligned[0]), (chat, item.misaligned[0])]
    start = time.monotonic()
    remote = target.loglikelihood(requests)
    seconds = time.monotonic() - start
    local = smollm2_target.loglikelihood(requests)
    diffs = [abs(r - loc) for r, loc in zip(remote, local)]
    gaps = [(remote[i] - remote[i + 1], local[i] - local[i + 1]) for i in range(0, len(requests), 2)]
    print(f"\n[llama.cpp] {len(requests)} references in {seconds:.1f} s; |server - local| max {max(diffs):.3f} "
          f"mean {statistics.mean(diffs):.3f} nats (local mean {statistics.mean(local):.1f}); aligned-minus-misaligned "
          f"gaps (server, local): {[(round(a, 2), round(b, 2)) for a, b in gaps]}")
    assert all(d <= tolerance(loc) for d, loc in zip(diffs, local)), list(zip(diffs, local))
    bound = [tolerance(local[i]) + tolerance(local[i + 1]) for i in range(0, len(requests), 2)]
    assert all((a > 0) == (b > 0) for (a, b), t in zip(gaps, bound) if abs(b) > t), gaps


def test_em_judge_readout_through_the_server(llama_server, key, smollm2_target):
    """The EM judge reads p(number + end of turn) for 0..100; a slice of those requests, as the judge builds them,
    through the server and locally: same end-of-turn token, same numbers within the tolerance, same favourite."""
    from persist.probes.judge import ALIGNED_QUESTION, end_of_turn, judge_chat

    target = endpoint(llama_server)
    item = traits_items(1)[0]
    eot = end_of_turn(target)
    assert eot == end_of_turn(smollm2_target) == "<|im_end|>"
    chat = judge_chat(item.chat, item.aligned[0], ALIGNED_QUESTION,
                      "Answer with a single number from 0 to 100 and nothing else.")
    requests = [(chat, n + eot) for n in JUDGE_NUMBERS]
    remote, local = target.loglikelihood(requests), smollm2_target.loglikelihood(requests)
    print(f"\n[llama.cpp] judge read-out {JUDGE_NUMBERS}: server {[round(x, 2) for x in remote]}, "
          f"local {[round(x, 2) for x in local]}")
    assert all(abs(r - loc) <= tolerance(loc) for r, loc in zip(remote, local)), list(zip(remote, local))
    ranked = sorted(local)
    if ranked[-1] - ranked[-2] > 2 * tolerance(ranked[-1]):
        assert remote.index(max(remote)) == local.index(max(local))


def test_wrong_key_is_refused_in_one_line(llama_server, monkeypatch):
    monkeypatch.delenv("PERSIST_TEST_NO_KEY", raising=False)
    target = endpoint(llama_server, api_key_env="PERSIST_TEST_NO_KEY")
    with pytest.raises(TargetError, match=r"HTTP 401 \(not authorised\); set \$PERSIST_TEST_NO_KEY") as err:
        target.generate([[{"role": "user", "content": "hi"}]], GenerationConfig(max_new_tokens=4))
    assert "\n" not in str(err.value)


def test_slow_answer_times_out_in_one_line(llama_server, key):
    """A judge-length prompt takes seconds to echo; a 1 s timeout gives up with one line, without retrying."""
    from persist.probes.judge import ALIGNED_QUESTION, judge_chat

    item = traits_items(1)[0]
    chat = judge_chat(item.chat, item.aligned[0], ALIGNED_QUESTION, "Answer with a number.")
    target = endpoint(llama_server, timeout=1, retries=0, canary=False)
    start = time.monotonic()
    with pytest.raises(TargetError, match=r"no answer within 1 s \(1 attempt\)") as err:
        target.loglikelihood([(chat, "50<|im_end|>")])
    assert "\n" not in str(err.value)
    assert time.monotonic() - start < 10


def test_server_without_logits_all_is_refused(tmp_path, key):
    """llama.cpp's server without --logits_all has no usable prompt log-probs (about -10 for every token, or a
    server error, depending on the version): refused, with the fix in the message."""
    require_server_package()
    server = LlamaServer(tmp_path / "server.log", logits_all=False)
    server.start()
    try:
        with pytest.raises(TargetError, match="--logits_all true") as err:
            endpoint(server).loglikelihood([([{"role": "user", "content": "hi"}], "Hello!")])
        assert "\n" not in str(err.value)
    finally:
        server.stop()


def test_killed_server_then_resume(llama_server, key, tmp_path, monkeypatch):
    """The server dies mid-run: the run stops with one line and keeps what it wrote; with the server back, the same
    command resumes and ends with every item scored once."""
    from persist.jobs.score import ScoreConfig, run_score

    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("PERSIST_OPENAI_CONCURRENCY", "2")
    monkeypatch.setenv("PERSIST_OPENAI_TIMEOUT", "600")
    cfg = ScoreConfig(model=ModelSpec.parse(f"openai:{SERVED}@{llama_server.url}"), suite="traits", limit=2, runs_dir=tmp_path,
                      name="resume", batch_size=1)
    records = tmp_path / "resume" / "records.jsonl"

    def kill_after_first_record() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if records.exists() and records.read_text().count("\n") >= 1:
                llama_server.kill()
                return
            time.sleep(0.1)

    watcher = threading.Thread(target=kill_after_first_record, daemon=True)
    watcher.start()
    with pytest.raises(TargetError, match="cannot connect") as err:
        run_score(cfg)
    watcher.join()
    assert "\n" not in str(err.value)
    before = records.read_text()
    assert before.count("\n") == 1
    print(f"\n[llama.cpp] restarted in {llama_server.start():.1f} s")
    out = run_score(cfg)
    assert out.n_scored == 1
    after = records.read_text()
    assert after.startswith(before)
    rows = [json.loads(line) for line in after.splitlines()]
    assert len(rows) == 2 and len({r["key"] for r in rows}) == 2
    assert os.path.exists(tmp_path / "resume" / "header.json")
