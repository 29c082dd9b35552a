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
    CUDA device the session stops with an error: a GPU check that tested nothing must not pass."""
    marked = [item for item in items if item.get_closest_marker("cuda")]
    if not marked:
        return
    if os.environ.get("PERSIST_CUDA_TESTS") != "1":
        config.hook.pytest_deselected(items=marked)
        items[:] = [item for item in items if not item.get_closest_marker("cuda")]
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
