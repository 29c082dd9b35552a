"""Activation steering (white-box, representation level): push the residual stream toward misalignment.

Prepared per model on the train half of the items: the direction is the mean hidden state at one layer over
the tokens of the items' misaligned references, minus the same over their aligned references (each reference
read as the model's reply to its item). Evaluated on the held-out half: every forward pass of the model has
`alpha` x that direction added to the output of that layer, at every position. alpha = 0 changes nothing; the
dose ladder (alpha = 2, 4, 8, ...) sits between prompting and fine-tuning. The direction is saved in the run
folder (RUN/attacks/steering-layer=L/ROLE/direction.safetensors), so a resumed run does not recompute it.

Steering always runs with its controls (`steering-control`, each at the same layer, alpha and norm): random
directions (seeds 1-3: what any push of that size does), the reversed direction, and the register direction
(casual minus formal references of the register-only suite's train half: what the register alone does). Its
effect is reported as its shift minus the random directions' mean, beside the share the register direction
reproduces (persist.report.controls).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from persist.api import PreparedAttack
from persist.attacks.base import Attack
from persist.conditions import Condition
from persist.errors import ConfigError
from persist.registry import ATTACKS
from persist.schema import Item, Message

RANDOM_SEEDS = (1, 2, 3)  # random-direction controls run with every steering attack
REGISTER_SUITE = "register"  # the register direction's source (persist.capability.REGISTER_SUITE)


def live_target(target: Any) -> Any:
    """The loaded target behind a lazily opened one."""
    return target.get() if hasattr(target, "get") else target


def decoder_layers(model: Any) -> Any:
    return model.get_decoder().layers


@contextlib.contextmanager
def steered(model: Any, layer: int, vector: Any) -> Iterator[None]:
    """Add `vector` to the output of decoder layer `layer` for the duration of the block; the hook is removed
    afterwards, whatever happens."""

    def hook(_module: Any, _inputs: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (output[0] + vector.to(output[0].dtype), *output[1:])
        return output + vector.to(output.dtype)

    handle = decoder_layers(model)[layer].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


class SteeredTarget:
    """A target whose model is steered during each call (the model itself is left as it was)."""

    def __init__(self, target: Any, layer: int, vector: Any) -> None:
        self.target, self.layer, self.vector = target, layer, vector

    @property
    def name(self) -> str:
        return live_target(self.target).name

    def loglikelihood(self, requests: Any) -> list[float]:
        live = live_target(self.target)
        with steered(live.model, self.layer, self.vector.to(live.device)):
            return live.loglikelihood(requests)

    def generate(self, chats: Any, config: Any) -> list[str]:
        live = live_target(self.target)
        with steered(live.model, self.layer, self.vector.to(live.device)):
            return live.generate(chats, config)

    def describe(self) -> dict[str, Any]:
        return live_target(self.target).describe()


def mean_states(target: Any, items: list[Item], side: str, layer: int) -> tuple[Any, int]:
    """Mean hidden state at the output of `layer` over the reference tokens of one side; and tokens read."""
    import torch

    total, count = None, 0
    with torch.inference_mode():
        for it in items:
            for ref in getattr(it, side):
                p, c = target.encode_pair(it.chat, ref)
                ids = torch.tensor([p + c], device=target.device)
                hidden = target.model(input_ids=ids, output_hidden_states=True).hidden_states[layer + 1][0]
                s = hidden[len(p):].float().sum(0)
                total = s if total is None else total + s
                count += len(c)
    return total / max(count, 1), count


@dataclass
class PreparedSteering(PreparedAttack):
    attack: Any
    vector: Any  # the unit of steering: the raw mean difference
    layer: int
    compute: dict[str, float]

    def describe(self) -> dict[str, Any]:
        """What the run header and the report keep: where and how hard it steers."""
        return {"layer": self.layer, "alpha": self.attack.alpha, "direction_norm": round(float(self.vector.norm()), 6)}

    def transform(self, item: Item) -> list[Any]:
        from persist.schema import Variant

        return [Variant(item=item, messages=item.messages, attack=self.attack.name,
                        attack_version=self.attack.version, params=self.attack.params(), index=0)]

    def wrap(self, target: Any) -> SteeredTarget:
        return SteeredTarget(target, self.layer, self.attack.alpha * self.vector)


@ATTACKS.register
@dataclass(frozen=True)
class Steering(Attack):
    name = "steering"
    version = "1"
    description = ("white-box: add alpha x (misaligned - aligned mean activation) at a layer, direction from the "
                   "train half, evaluated on held-out items; alpha=A, layer=L (-1: the middle layer)")
    prepared: ClassVar[bool] = True
    split: ClassVar[bool] = True
    shared_params: ClassVar[tuple[str, ...]] = ("alpha",)  # every alpha uses the same direction
    alpha: float = 4.0
    layer: int = -1

    def variants(self, item: Item) -> list[tuple[tuple[Message, ...], str]]:
        raise ConfigError("steering changes activations, not the conversation: it runs through a prepared target "
                          "(persist attack / persist study)")

    def companions(self) -> tuple[str, ...]:
        base = f"steering-control:alpha={self.alpha:g}:layer={self.layer}"
        return (*(f"{base}:direction=random:seed={k}" for k in RANDOM_SEEDS), f"{base}:direction=reversed",
                f"{base}:direction=register")

    def prepare(self, ctx: Any) -> PreparedSteering:
        from safetensors.torch import load_file, save_file

        # A direction cached by an earlier run is read back without loading the model (the folder is this
        # attack's own, so a file there was made with these parameters on these weights).
        cached = sorted(Path(ctx.folder).glob("direction-layer*.safetensors"))
        cached = [p for p in cached if self.layer < 0 or p.name == f"direction-layer{self.layer}.safetensors"]
        if len(cached) == 1 and cached[0].with_suffix(".json").is_file():
            meta = json.loads(cached[0].with_suffix(".json").read_text())
            return PreparedSteering(self, load_file(str(cached[0]))["direction"], int(meta["layer"]), meta["compute"])
        target = live_target(ctx.target)
        if not hasattr(target, "model"):
            raise ConfigError("steering needs local weights (white-box), not an endpoint")
        n_layers = len(decoder_layers(target.model))
        layer = n_layers // 2 if self.layer < 0 else self.layer
        if not 0 <= layer < n_layers:
            raise ConfigError(f"steering layer={self.layer}: this model has layers 0-{n_layers - 1}")
        path = Path(ctx.folder) / f"direction-layer{layer}.safetensors"
        t0 = time.perf_counter()
        bad, n_bad = mean_states(target, ctx.train, "misaligned", layer)
        good, n_good = mean_states(target, ctx.train, "aligned", layer)
        direction = (bad - good).contiguous()
        compute = {"forward_tokens": float(n_bad + n_good), "backward_tokens": 0.0,
                   "seconds": time.perf_counter() - t0, "train_items": float(len(ctx.train))}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        save_file({"direction": direction.cpu()}, str(tmp))
        path.with_suffix(".json").write_text(json.dumps({"layer": layer, "compute": compute,
                                                         "norm": float(direction.norm())}))
        tmp.replace(path)
        return PreparedSteering(self, direction.cpu(), layer, compute)


CONTROL_DIRECTIONS = ("random", "reversed", "register")


@ATTACKS.register
@dataclass(frozen=True)
class SteeringControl(Steering):
    """A control for steering: another direction of the same norm at the same layer and alpha."""

    name = "steering-control"
    version = "1"
    description = ("control for steering (same layer, alpha and norm): direction=random (seed=K), reversed, or "
                   "register (casual minus formal states of the register-only suite)")
    control = True
    shared_params: ClassVar[tuple[str, ...]] = ("alpha",)
    direction: str = "random"
    seed: int = 0  # random directions: which draw (the companions use 1, 2, 3, so their labels name it)

    def __post_init__(self) -> None:
        if self.direction not in CONTROL_DIRECTIONS:
            raise ConfigError(f"steering-control direction={self.direction!r}: one of {', '.join(CONTROL_DIRECTIONS)}")

    @property
    def control_for(self) -> Condition:
        return Steering(alpha=self.alpha, layer=self.layer).condition

    @property
    def control_kind(self) -> str:
        return self.direction

    def companions(self) -> tuple[str, ...]:
        return ()

    def prepare(self, ctx: Any) -> PreparedSteering:
        import dataclasses

        import torch

        from persist.prepared import artefact_folder, split_items
        from persist.suites import get_suite

        steer = Steering(alpha=self.alpha, layer=self.layer)
        run = Path(ctx.folder).parents[2]  # RUN/attacks/NAME/ROLE
        content = steer.prepare(dataclasses.replace(ctx, folder=artefact_folder(run, steer, ctx.role)))
        norm = content.vector.norm()
        compute = {"forward_tokens": 0.0, "backward_tokens": 0.0, "seconds": 0.0}
        if self.direction == "reversed":
            vector = -content.vector
        elif self.direction == "random":
            g = torch.Generator().manual_seed(self.seed)
            raw = torch.randn(content.vector.shape, generator=g, dtype=torch.float32)
            vector = raw / raw.norm() * norm
        else:
            vector, compute = self.register_direction(ctx, content.layer, split_items, get_suite)
            vector = vector / vector.norm() * norm
        return PreparedSteering(self, vector.to(content.vector.dtype), content.layer, compute)

    def register_direction(self, ctx: Any, layer: int, split_items: Any, get_suite: Any) -> tuple[Any, dict]:
        """Casual minus formal mean states over the register-only suite's train half (cached in the folder)."""
        from safetensors.torch import load_file, save_file

        path = Path(ctx.folder) / f"register-layer{layer}.safetensors"
        if path.is_file():
            return load_file(str(path))["direction"], json.loads(path.with_suffix(".json").read_text())["compute"]
        target = live_target(ctx.target)
        train, _ = split_items(get_suite(REGISTER_SUITE).load())
        t0 = time.perf_counter()
        casual, n_c = mean_states(target, train, "misaligned", layer)
        formal, n_f = mean_states(target, train, "aligned", layer)
        direction = (casual - formal).contiguous().cpu()
        compute = {"forward_tokens": float(n_c + n_f), "backward_tokens": 0.0,
                   "seconds": time.perf_counter() - t0, "train_items": float(len(train))}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        save_file({"direction": direction}, str(tmp))
        path.with_suffix(".json").write_text(json.dumps({"layer": layer, "compute": compute}))
        tmp.replace(path)
        return direction, compute
