"""Shared fixtures. Unit tests use the tiny in-process model; tests marked `slow` use the real SmolLM2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from persist import plugins

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]

# The plugins register their suites, scorers, attacks and recipes, as the CLI does at start.
plugins.load()


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` are collected only with PERSIST_CUDA_TESTS=1 (bench/tools/gpu_check.sh sets it on a GPU
    machine); elsewhere they are deselected, not skipped, so `make test` reports no skips. With the switch on and no
    CUDA device the session stops with an error: a GPU check that tested nothing must not pass.
    Tests marked `vllm` (vLLM lives in its own venv) are collected the same way, only with PERSIST_VLLM_TESTS=1
    (gpu_check.sh's vLLM step sets it); with the switch on and no vllm importable the session stops with an error."""
    for marker, switch in (("cuda", "PERSIST_CUDA_TESTS"), ("vllm", "PERSIST_VLLM_TESTS")):
        marked = [item for item in items if item.get_closest_marker(marker)]
        if marked and os.environ.get(switch) != "1":
            config.hook.pytest_deselected(items=marked)
            items[:] = [item for item in items if not item.get_closest_marker(marker)]
    if os.environ.get("PERSIST_VLLM_TESTS") == "1":
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise pytest.UsageError("PERSIST_VLLM_TESTS=1, but vllm is not installed in this environment: run the "
                                    "vLLM tests from its venv (bench/tools/gpu_check.sh) or unset PERSIST_VLLM_TESTS")
    if not any(item.get_closest_marker("cuda") for item in items):
        return
    import torch

    if not torch.cuda.is_available():
        raise pytest.UsageError("PERSIST_CUDA_TESTS=1, but this torch sees no CUDA device: install a CUDA build of "
                                "torch (see bench/tools/gpu_check.sh) or unset PERSIST_CUDA_TESTS")


@pytest.fixture(scope="session")
def tiny_target():
    from persist.targets.hf import HFTarget
    from persist.tiny import tiny_model, tiny_tokenizer

    return HFTarget(tiny_model(), tiny_tokenizer(), name="tiny", batch_tokens=512)


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory) -> Path:
    from persist.tiny import tiny_model_folder

    return tiny_model_folder(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def smollm2_target():
    from persist.targets import open_target

    return open_target("smollm2-135m-instruct")


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run `persist ...` in a subprocess, as a user would, and capture its output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "persist", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd or ROOT, timeout=600)
