"""Train a recipe's dose ladder as its own program, for `accelerate launch` (data-parallel over GPUs/processes).

    accelerate launch --multi_gpu --num_processes N -m persist.finetune_attacks.launch \\
        --model SPEC --recipe bad-medical --doses 25,50,100 --out runs/NAME/adapters/model/bad-medical

Every process trains on its share of each step's micro-batches and the update equals one process's with the
same effective batch (persist.finetune_attacks.lora). Afterwards
    persist finetune-attack --model SPEC --recipe bad-medical --doses 0,25,50,100 --name NAME
finds the checkpoints (same recipe settings) and only scores them. The flags are the ones `persist
finetune-attack` declares (persist.commands.options), parsed by the same Typer machinery.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from persist.commands.options import (
    BatchSizeOpt,
    DosesOpt,
    LearningRateOpt,
    ModelOpt,
    RecipeOpt,
    TrainSeedOpt,
    parse_doses,
)

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def launch(
    out: Annotated[Path, typer.Option(help="Checkpoint folder (RUN/adapters/ROLE/RECIPE).")],
    model: ModelOpt = "smollm2-135m-instruct",
    recipe: RecipeOpt = "bad-medical",
    doses: DosesOpt = None,
    learning_rate: LearningRateOpt = None,
    batch_size: BatchSizeOpt = None,
    micro_batch_size: Annotated[int | None, typer.Option(help="Examples per forward pass on one process.")] = None,
    seed: TrainSeedOpt = None,
    load_in_4bit: Annotated[bool, typer.Option("--load-in-4bit", help="QLoRA: 4-bit NF4 base weights.")] = False,
    bf16: Annotated[bool, typer.Option("--bf16", help="Train in bfloat16 (GPUs).")] = False,
) -> None:
    """Train the recipe's doses (local weights only) into --out; `persist finetune-attack` then scores them."""
    from persist import conditions, models, plugins
    from persist.errors import ConfigError
    from persist.registry import RECIPES, PluginSpec

    plugins.load()
    train = {k: v for k, v in {"learning_rate": learning_rate, "batch_size": batch_size,
                               "micro_batch_size": micro_batch_size, "seed": seed,
                               "load_in_4bit": load_in_4bit or None, "bf16": bf16 or None}.items() if v is not None}
    built = RECIPES.build(PluginSpec(recipe, {"train": train} if train else {}))
    steps = parse_doses(doses)
    if not steps:
        raise ConfigError("--doses is required: the optimizer steps to checkpoint, e.g. 25,50,100")
    checked = conditions.valid_doses(steps)
    resolved = models.resolve(model)
    base = models.merged_folder(resolved)
    result = built.run(str(base), out, checked,
                       meta={"model_spec": resolved.spec.text, "base_sha256": resolved.weights_sha256})
    typer.echo(f"checkpoints: {', '.join(str(p) for _, p in sorted(result.checkpoints.items()))}")


def main() -> None:
    from persist.commands.app import run

    run(app)


if __name__ == "__main__":
    main()
