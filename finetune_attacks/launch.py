"""Train a recipe's dose ladder as its own program, for `accelerate launch` (data-parallel over GPUs/processes).

    accelerate launch --multi_gpu --num_processes N -m persist.finetune_attacks.launch \\
        --model SPEC --recipe bad-medical --doses 25,50,100 --out runs/NAME/adapters/model/bad-medical

Every process trains on its share of each step's micro-batches and the update equals one process's with the
same effective batch (persist.finetune_attacks.lora). Afterwards
    persist finetune-attack --model SPEC --recipe bad-medical --doses 0,25,50,100 --name NAME
finds the checkpoints (same recipe settings) and only scores them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from persist import conditions, models, plugins
from persist.errors import PersistError
from persist.registry import RECIPES, PluginSpec


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m persist.finetune_attacks.launch", description=__doc__.split(
        "\n")[0])
    parser.add_argument("--model", required=True, help="model spec with local weights (see `persist --help`)")
    parser.add_argument("--recipe", default="bad-medical", help="recipe name (`persist finetune-attack --list`)")
    parser.add_argument("--doses", required=True, help="optimizer steps to checkpoint, e.g. 25,50,100")
    parser.add_argument("--out", required=True, type=Path, help="checkpoint folder (RUN/adapters/ROLE/RECIPE)")
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--micro-batch-size", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--load-in-4bit", action="store_true")
    parser.add_argument("--bf16", action="store_true")
    args = parser.parse_args(argv)
    try:
        plugins.load()
        train = {k: v for k, v in {"learning_rate": args.learning_rate, "batch_size": args.batch_size,
                                   "micro_batch_size": args.micro_batch_size, "seed": args.seed,
                                   "load_in_4bit": args.load_in_4bit or None, "bf16": args.bf16 or None}.items()
                 if v is not None}
        recipe = RECIPES.build(PluginSpec(args.recipe, {"train": train} if train else {}))
        try:
            doses = conditions.valid_doses(tuple(int(d) for d in args.doses.split(",") if d.strip()))
        except ValueError:
            raise PersistError(f"--doses {args.doses!r}: give comma-separated whole numbers of steps") from None
        resolved = models.resolve(args.model)
        base = models.merged_folder(resolved)
        result = recipe.run(str(base), args.out, doses,
                            meta={"model_spec": resolved.spec.text, "base_sha256": resolved.weights_sha256})
    except PersistError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    print(f"checkpoints: {', '.join(str(p) for _, p in sorted(result.checkpoints.items()))}")


if __name__ == "__main__":
    main()
