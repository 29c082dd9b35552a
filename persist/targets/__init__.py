"""Targets: the model under test. `open_target(spec)` picks the backend from the spec."""

from __future__ import annotations

from typing import Any

from persist.models import LoadOptions
from persist.targets.base import GenerationConfig, Target

__all__ = ["GenerationConfig", "Target", "open_target"]


def open_target(spec: str, options: LoadOptions = LoadOptions(), **kwargs: Any) -> Target:
    """'openai:MODEL@URL' -> OpenAITarget; anything else is resolved and loaded as an HFTarget."""
    if spec.startswith("openai:"):
        from persist.targets.openai import OpenAITarget

        return OpenAITarget(spec, **kwargs)
    from persist import models
    from persist.targets.hf import HFTarget

    resolved = models.resolve(spec, allow_pickle=options.allow_pickle)
    model, tokenizer = models.load(resolved, options)
    info = {"resolved": resolved.to_dict(), "load_in_4bit": options.load_in_4bit}
    return HFTarget(model, tokenizer, name=resolved.name, info=info, **kwargs)
