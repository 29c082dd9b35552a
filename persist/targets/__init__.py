"""Targets: the model under test. `open_target(spec)` picks the backend from the spec's kind."""

from __future__ import annotations

from typing import Any

from persist.models import LoadOptions, ModelSpec, ResolvedModel
from persist.targets.base import GenerationConfig, Target

__all__ = ["GenerationConfig", "Target", "open_target", "release_engines"]


def open_target(spec: ModelSpec | ResolvedModel | str, options: LoadOptions = LoadOptions(), **kwargs: Any) -> Target:
    """An endpoint spec -> OpenAITarget; a local spec (or already resolved weights) -> HFTarget, or VLLMTarget
    with --engine vllm (adapters served as LoRA on the unmerged base), or LlamaCppTarget with --engine llamacpp
    (generation by llama.cpp on the model's GGUF, scoring by the HF engine)."""
    from persist import models

    if isinstance(spec, ResolvedModel):
        resolved = spec
    else:
        spec = ModelSpec.parse(spec)
        spec.check_load(options)
        if spec.is_endpoint:
            from persist.targets.openai import OpenAITarget

            return OpenAITarget(spec, tokenizer=options.tokenizer, trust_remote_code=options.trust_remote_code,
                                **kwargs)
        resolved = models.resolve(spec, allow_pickle=options.allow_pickle)
    if options.engine == "vllm":
        from persist.targets.vllm import VLLMTarget

        return VLLMTarget(resolved, options, **kwargs)
    from persist.targets.hf import HFTarget

    gguf = None
    if options.engine == "llamacpp":  # refuse a model llama.cpp cannot run before loading anything
        from persist.targets.llamacpp import gguf_of, import_llama_cpp

        import_llama_cpp()
        gguf = gguf_of(resolved)
    model, tokenizer = models.load(resolved, options)
    info = {"engine": "hf", "resolved": resolved.to_dict(), "load_in_4bit": options.load_in_4bit}
    target = HFTarget(model, tokenizer, name=resolved.name, info=info, **kwargs)
    if gguf is None:
        return target
    from persist.targets.llamacpp import LlamaCppTarget

    return LlamaCppTarget(target, gguf, gpu_layers=0 if str(target.device) == "cpu" else -1)


def release_engines() -> None:
    """Free the GPU memory a resident vLLM engine holds (before fine-tuning in the same process); a no-op when
    vLLM was never used."""
    import sys

    engine = sys.modules.get("persist.targets.vllm")
    if engine is not None:
        engine.release_engine()
