"""Resolve a --model spec to weights on disk, and load them.

Spec forms (ModelSpec.parse), tried in this order:
  openai:MODEL[@URL]    an OpenAI-compatible endpoint (no local weights)
  NAME                  a bundled short name (see BUNDLED), e.g. smollm2-135m-instruct
  PATH/TO/FOLDER        a local Hugging Face folder (config.json + *.safetensors)
  PATH/TO/FILE.gguf     a local GGUF file; converted once into a safetensors folder in the cache
  ORG/NAME              a hub id (needs hub access, or a populated HF cache)
  SPEC+ADAPTER_DIR      any local spec plus a peft LoRA adapter folder

GGUF files and bundled packages: see persist.bundled (dequantised once into $PERSIST_HOME/models/).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from persist.bundled import (  # noqa: F401  (re-exported: persist.models is the public face)
    ADAPTER_BUNDLES,
    BUNDLED,
    SHA_SIDECAR,
    BundledModel,
    bundled_adapter_dir,
    bundled_folder,
    bundled_gguf,
    convert_gguf,
    converted_folder,
    count_params,
    model_info,
    persist_home,
    quiet_transformers,
    sha256_file,
    weights_sha256,
)
from persist.errors import ConfigError, ModelLoadError, suggest
from persist.folders import published_folder
from persist.jsonl import stable_hash

VLLM_MISSING = ("--engine vllm: vLLM is not installed; pip install 'persist[vllm]' (vLLM needs a CUDA GPU), "
                "or use --engine hf")

# bitsandbytes warns on every import, on CPUs with AVX512-BF16, that the optional `kernels` package is absent.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
DEFAULT_ENDPOINT = "http://127.0.0.1:8000/v1"


@dataclass(frozen=True)
class ModelSpec:
    """A --model value, parsed once where it enters (the CLI or a job config) and passed as this afterwards.

    kind: bundled | folder | gguf | hub | endpoint. `base` is the bundled name, path or hub id (for an endpoint,
    the served model's name); `adapter` a peft adapter folder on top; `url` the endpoint's base URL; `name` what
    records call the model."""

    text: str
    kind: str
    base: str
    adapter: str | None = None
    url: str | None = None
    name: str = ""

    @property
    def is_endpoint(self) -> bool:
        return self.kind == "endpoint"

    def __str__(self) -> str:
        return self.text

    def with_adapter(self, folder: Path, name: str) -> ModelSpec:
        """This model plus a peft adapter; `name` labels the records (e.g. 'my-model@bad-medical:50'). A model
        that already carries an adapter is merged first (`merged_folder`), so stacking is explicit."""
        if self.adapter is not None or self.is_endpoint:
            raise ConfigError(f"{self.text}: an adapter goes on plain local weights; merge this model first")
        return ModelSpec(text=f"{self.text}+{folder}", kind=self.kind, base=self.base, adapter=str(folder), name=name)

    def check_load(self, options: LoadOptions) -> None:
        """Load options that cannot apply to this spec are refused, not ignored."""
        if self.is_endpoint and options.load_in_4bit:
            raise ConfigError(f"--load-in-4bit with {self.text}: an endpoint serves its own weights; quantise on the "
                              "server, or drop --load-in-4bit")
        if self.is_endpoint and options.engine != "hf":
            raise ConfigError(f"--engine {options.engine} with {self.text}: an endpoint runs its own engine; drop "
                              "--engine, or serve the model with `vllm serve` and point openai:MODEL@URL at it")
        if options.engine == "llamacpp" and not self.is_endpoint:
            llama_cpp_can_run(self)

    @classmethod
    def parse(cls, text: str | ModelSpec) -> ModelSpec:
        """Classify a spec by its form and the file system; converts and loads nothing."""
        if isinstance(text, ModelSpec):
            return text
        text = (text or "").strip()
        if not text:
            raise ModelLoadError("--model is empty: give a bundled name (see `persist models`), a folder, a .gguf, "
                                 "a hub id or openai:MODEL@URL")
        if text.startswith("openai:"):
            model, sep, url = text.removeprefix("openai:").partition("@")
            if not model:
                raise ConfigError(f"{text!r}: give a model name, e.g. openai:my-model@http://127.0.0.1:8000/v1")
            url = (url if sep else os.environ.get("OPENAI_BASE_URL", DEFAULT_ENDPOINT)).rstrip("/")
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"{text!r}: the endpoint must start with http:// or https://")
            return cls(text=text, kind="endpoint", base=model, url=url, name=text)
        base, adapter = text, None
        if "+" in text and not Path(text).exists():  # a path that contains '+' is never split
            base, adapter = text.rsplit("+", 1)
        name = text if adapter is None else f"{base}+{Path(adapter).name}"
        if base in ADAPTER_BUNDLES:
            if adapter is not None:
                raise ModelLoadError(f"{text}: {base} already carries an adapter; merge it first or stack on "
                                     f"{ADAPTER_BUNDLES[base]}")
            return cls(text=text, kind="bundled", base=ADAPTER_BUNDLES[base], adapter=str(bundled_adapter_dir(base)),
                       name=base)
        if adapter is not None and not (Path(adapter).expanduser() / "adapter_config.json").is_file():
            raise ModelLoadError(f"adapter {adapter!r}: not a peft adapter folder (no adapter_config.json); "
                                 "pass SPEC+FOLDER where FOLDER was written by peft's save_pretrained")
        return cls(text=text, kind=_base_kind(base), base=base, adapter=adapter, name=name)


def llama_cpp_can_run(spec: ModelSpec) -> None:
    """--engine llamacpp generates on the model's own GGUF (a bundled name or a .gguf path) and serves no adapter."""
    if spec.adapter is not None or spec.base in ADAPTER_BUNDLES:
        raise ConfigError(f"--engine llamacpp with {spec.text}: this engine does not serve LoRA adapters (a "
                          "fine-tuned dose, or a model with an adapter); use --engine hf")
    if spec.kind == "gguf" or (spec.kind == "bundled" and spec.base != "tiny-random"):
        return
    raise ConfigError(f"--engine llamacpp with {spec.text}: llama.cpp runs GGUF files; pass a .gguf path or a "
                      "bundled name, or use --engine hf")


def _base_kind(base: str) -> str:
    if base in BUNDLED:
        return "bundled"
    path = Path(base).expanduser()
    if path.is_dir():
        return "folder"
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelLoadError(f"{base}: a file that is not .gguf; pass a model folder or a .gguf file")
        return "gguf"
    looks_like_path = base.startswith((".", "/", "~")) or base.endswith(".gguf") or base.count("/") > 1
    if HUB_ID.match(base) and not looks_like_path:
        return "hub"
    if looks_like_path or "/" in base:
        raise ModelLoadError(f"{base}: no such file or folder")
    raise ModelLoadError(f"unknown bundled model {base!r}{suggest(base, list(BUNDLED))}; "
                         f"choose from: {', '.join(BUNDLED)}, or pass a folder, .gguf file or hub id")


@dataclass(frozen=True)
class ResolvedModel:
    """Weights on disk, ready to load. `path` is a folder with config.json and safetensors."""

    spec: ModelSpec
    path: str
    adapter: str | None = None
    weights_sha256: dict[str, str] = field(default_factory=dict)
    adapter_sha256: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def kind(self) -> str:
        return self.spec.kind

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec.text, "kind": self.kind, "name": self.name, "path": self.path,
                "adapter": self.adapter, "weights_sha256": self.weights_sha256,
                "adapter_sha256": self.adapter_sha256}


# ---------------------------------------------------------------- resolution


def resolve(spec: ModelSpec | str, *, allow_pickle: bool = False) -> ResolvedModel:
    """Weights on disk for a local spec (converting a GGUF on first use)."""
    spec = ModelSpec.parse(spec)
    if spec.is_endpoint:
        raise ConfigError(f"{spec.text}: an endpoint has no local weights; this needs a local model")
    path = _base_folder(spec, allow_pickle=allow_pickle)
    resolved = ResolvedModel(spec=spec, path=str(path), weights_sha256=weights_sha256(path))
    if spec.adapter is None:
        return resolved
    adir = Path(spec.adapter).expanduser()
    return replace(resolved, adapter=str(adir.resolve()), adapter_sha256=weights_sha256(adir, "adapter_model.*"))


def _base_folder(spec: ModelSpec, *, allow_pickle: bool) -> Path:
    if spec.kind == "bundled" and spec.base == "tiny-random":
        from persist.tiny import tiny_model_folder

        return tiny_model_folder(persist_home() / "models" / "tiny-random")
    if spec.kind == "bundled":
        return bundled_folder(spec.base)
    path = Path(spec.base).expanduser()
    if spec.kind == "folder":
        check_model_folder(path, allow_pickle=allow_pickle)
        return path.resolve()
    if spec.kind == "gguf":
        return convert_gguf(path)
    return hub_folder(spec.base, allow_pickle=allow_pickle)


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


# ---------------------------------------------------------------- loading


ENGINES = ("hf", "vllm", "llamacpp")


@dataclass(frozen=True)
class LoadOptions:
    """How to load weights: device (auto = cuda > mps > cpu), dtype, 4-bit, the two security switches, and the
    engine that runs a local model (hf: transformers; vllm: vLLM's offline engine on CUDA, `tp` GPUs per model)."""

    device: str = "auto"
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    load_in_4bit: bool = False
    allow_pickle: bool = False
    trust_remote_code: bool = False
    engine: str = "hf"  # hf | vllm | llamacpp
    tp: int = 1  # tensor-parallel GPUs (vllm)
    # An endpoint's tokenizer (bundled name, folder, .gguf, hub id) for its chat template; local models use their own.
    tokenizer: str | None = None

    def __post_init__(self) -> None:
        if self.dtype not in ("auto", "float32", "bfloat16", "float16", "fp32", "bf16", "fp16"):
            raise ConfigError(f"--dtype {self.dtype!r}: use auto, float32, bfloat16 or float16")
        if self.device not in ("auto", "cpu", "mps") and not self.device.startswith("cuda"):
            raise ConfigError(f"--device {self.device!r}: use auto, cpu, cuda, cuda:N or mps")
        if self.engine not in ENGINES:
            raise ConfigError(f"--engine {self.engine!r}: use hf (transformers), vllm (CUDA) or llamacpp (generation "
                              f"by llama.cpp on a GGUF){suggest(self.engine, list(ENGINES))}")
        if self.tp < 1 or (self.tp > 1 and self.engine != "vllm"):
            raise ConfigError(f"--tp {self.tp}: give a whole number >= 1; more than 1 GPU per model needs --engine vllm")
        if self.engine == "vllm" and self.device not in ("auto", "cuda"):
            raise ConfigError(f"--device {self.device} with --engine vllm: vLLM runs on CUDA GPUs (choose them with "
                              "CUDA_VISIBLE_DEVICES); drop --device, or use --engine hf")

    def check_device(self) -> None:
        """Refuse a device (or engine) this machine cannot use, before anything is written (imports torch)."""
        if self.engine == "vllm":
            import importlib.util

            if importlib.util.find_spec("vllm") is None:
                raise ConfigError(VLLM_MISSING)
            pick_device("cuda")
            return
        pick_device(self.device)


def pick_device(device: str = "auto") -> str:
    """The device to load on; a device this torch build lacks is a ConfigError that says what to install."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise ConfigError(f"--device {device}: this torch ({torch.__version__}, {build}) sees no CUDA device; on a "
                          "GPU machine install a CUDA build of torch (rm -rf .venv; make setup TORCH_SPEC='torch==2.13.0 "
                          "--index-url https://download.pytorch.org/whl/cu128', the index for your CUDA version), "
                          "or drop --device")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("--device mps: this torch sees no Apple GPU (MPS); use --device cpu or auto")
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
    """Load (model, tokenizer) in eval mode on the chosen device; the adapter (if any) is merged into the weights
    (kept beside them under --load-in-4bit)."""
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
        # transformers wraps PreTrainedModel.to in functools.wraps(torch.nn.Module.to); typeshed's _Wrapped drops the
        # method binding, so mypy takes `device` for `self`
        model.to(device)  # type: ignore[arg-type]
    if resolved.adapter:
        model = apply_adapter(model, resolved, resolved.adapter)
        if not options.load_in_4bit:
            # Merged into the weights for inference: the same function up to float rounding (1.2e-4 nats at most
            # over 192 fp32 requests), without the LoRA layers' extra small matmuls (8.5% of a scoring pass on
            # SmolLM2, 2026-12-07). 4-bit weights cannot take the merge and keep the adapter beside them.
            model = model.merge_and_unload()
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def apply_adapter(model: Any, resolved: ResolvedModel, adapter: str) -> Any:
    """`model` with `resolved`'s LoRA adapter (the folder `adapter`) applied, frozen."""
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, adapter, is_trainable=False)
    except (RuntimeError, ValueError, KeyError, OSError) as exc:
        raise ModelLoadError(f"adapter {adapter}: does not fit base model {resolved.spec.base} "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                             "was it trained on a different base?") from None


def merged_folder(resolved: ResolvedModel) -> Path:
    """A plain model folder for `resolved`: the base itself, or base + adapter merged once into the cache.

    Fine-tuning attacks on an adapter model (e.g. the demo's trained model) train a new LoRA on the merged weights.
    """
    if not resolved.adapter:
        return Path(resolved.path)
    out = persist_home() / "merged" / stable_hash([resolved.weights_sha256, resolved.adapter_sha256])
    if (out / "config.json").is_file():
        return out
    merged, tokenizer = load(resolved, LoadOptions(device="cpu", dtype="float32"))  # load merges the adapter
    # another process (accelerate launch, a parallel run) may merge the same weights first: its copy is kept
    with published_folder(out, ".merge-") as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return out
