"""Targets: the model under test. `open_target(spec)` picks the backend from the spec's kind."""

from __future__ import annotations

from typing import Any

from persist.models import LoadOptions, ModelSpec, ResolvedModel
from persist.targets.base import GenerationConfig, Target

__all__ = ["GenerationConfig", "Target", "open_target"]


def open_target(spec: ModelSpec | ResolvedModel | str, options: LoadOptions = LoadOptions(), **kwargs: Any) -> Target:
    """An endpoint spec -> OpenAITarget; a local spec (or already resolved weights) -> HFTarget."""
    from persist import models

    if isinstance(spec, ResolvedModel):
        resolved = spec
    else:
        spec = ModelSpec.parse(spec)
        spec.check_load(options)
        if spec.is_endpoint:
            from persist.targets.openai import OpenAITarget

            return OpenAITarget(spec, **kwargs)
        resolved = models.resolve(spec, allow_pickle=options.allow_pickle)
    from persist.targets.hf import HFTarget

    model, tokenizer = models.load(resolved, options)
    info = {"resolved": resolved.to_dict(), "load_in_4bit": options.load_in_4bit}
    return HFTarget(model, tokenizer, name=resolved.name, info=info, **kwargs)
