"""Generate the answers of the trait-label validation set (probes/data/trait_labels.jsonl, issue 28 part 3).

SmolLM2-135M-Instruct, the 48 held-out items of a 96-item selection of `traits`, one greedy and two sampled answers
(temperature 1) per item under seven conditions: clean, the bad-medical persona, steering at alpha 4 and 8, the GCG
suffix (20 steps, optimised on the train half), and bad-medical and good-medical fine-tunes at 50 steps. Each
condition is also scored with the likelihood scorer on the same items, so every answer has its item's likelihood
shift beside it. The run folder is an ordinary persist run folder (resumable: rerun the command).

    python bench/experiments/behaviour_validation.py runs/behaviour-validation   # ~45 min on 2 CPU cores

Only the listed conditions are run: the attacks' own controls (steering's random directions, ...) are left out on
purpose, since this folder validates the grading, not the attacks. Then `export` writes the answers, shuffled with
a fixed seed and stripped of their condition, for blind labelling:

    python bench/experiments/behaviour_validation.py runs/behaviour-validation --export /tmp/to_label.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
import time
from pathlib import Path

ATTACKS = ("persona-bad-medical", "steering:alpha=4", "steering:alpha=8", "gcg-suffix:steps=20")
RECIPES = ("bad-medical", "good-medical")
STEPS = 50
ITEMS, BEHAVIOUR, SAMPLES, MAX_NEW = 96, 48, 2, 96
MODEL = "smollm2-135m-instruct"


def generate(folder: Path) -> None:
    import persist.attacks  # noqa: F401  (registers the plugins)
    import persist.finetune_attacks  # noqa: F401
    import persist.probes  # noqa: F401
    from persist import conditions, models
    from persist.behaviour import Behaviour
    from persist.jobs.attack import score_attacks
    from persist.jobs.finetune import release_memory, resolve_local
    from persist.models import LoadOptions, ModelSpec
    from persist.registry import ATTACKS as REG
    from persist.registry import RECIPES as RREG
    from persist.registry import PluginSpec
    from persist.runner import LazyTarget, clean_variant, run_units
    from persist.scoring import build_scorer
    from persist.store import RunStore
    from persist.suites import get_suite, select
    from persist.targets import open_target

    load = LoadOptions()
    suite = get_suite("traits")
    items = select(suite.load(), ITEMS)
    spec = ModelSpec.parse(MODEL)
    config = {"job": "behaviour-validation", "model": MODEL, "attacks": list(ATTACKS), "recipes": list(RECIPES),
              "steps": STEPS, "items": ITEMS, "behaviour": BEHAVIOUR, "samples": SAMPLES, "max_new_tokens": MAX_NEW}
    store = RunStore.open(folder, config, argv=sys.argv, extra={"suite_version": suite.version})
    behaviour = Behaviour.build(items, BEHAVIOUR, SAMPLES, None, load, suite.version)
    assert behaviour is not None
    behaviour = dataclasses.replace(behaviour, scorer=build_scorer(
        PluginSpec("answers", {"samples": SAMPLES, "max_new_tokens": MAX_NEW}), load))
    store.update_header(behaviour=behaviour.header())
    scorer = build_scorer(PluginSpec("likelihood"), load)

    def progress(title: str, total: int):  # type: ignore[no-untyped-def]
        print(f"{time.strftime('%H:%M:%S')} {title}", flush=True)
        return lambda n: None

    attacks = [REG.build(PluginSpec.parse(s, "attack")) for s in ATTACKS]
    done = score_attacks(store, roles=[("model", spec)], attacks=attacks, items=items, suite_version=suite.version,
                         scorer=scorer, load=load, batch_size=32, progress=progress, run_folder=folder,
                         side=[behaviour])
    store.update_header(split=done["split"], attack_artefacts=done["artefacts"])
    release_memory()
    resolved = resolve_local(spec, load, "the validation run")
    base = models.merged_folder(resolved)
    units = [clean_variant(i) for i in items]
    for name in RECIPES:
        recipe = RREG.build(PluginSpec(name, {}))
        out = folder / "adapters" / name
        print(f"{time.strftime('%H:%M:%S')} training {name} ({STEPS} steps)", flush=True)
        result = recipe.run(str(base), out, (0, STEPS), on_step=lambda s, loss: None,
                            meta={"model_spec": resolved.spec.text, "base_sha256": resolved.weights_sha256})
        release_memory()
        adapted = ModelSpec.parse(str(base)).with_adapter(result.checkpoints[STEPS], name=f"{MODEL}@{name}:{STEPS}")
        target = LazyTarget(lambda a=adapted: open_target(a, load))
        cond = conditions.finetune(name, STEPS)
        run_units(store, role="model", target=target, scorer=scorer, units=units, condition=cond,
                  suite_version=suite.version, batch_size=32)
        behaviour.run(store, role="model", target=target, condition=cond, batch_size=32, progress=progress)
        del target
        release_memory()
    print(f"{time.strftime('%H:%M:%S')} done", flush=True)


def export(folder: Path, path: Path) -> None:
    """Every distinct answer (by sha256), shuffled (seed 0), without its condition: what a labeller sees."""
    import persist.probes  # noqa: F401
    from persist.store import RunStore
    from persist.suites import get_suite

    items = {i.id: i for i in get_suite("traits").load()}
    seen: dict[str, dict[str, str]] = {}
    for r in RunStore(folder).records():
        if not r.suite.endswith("@behaviour"):
            continue
        item = items[r.item_id]
        for a in r.details["answers"]:
            if a["sha256"] not in seen:
                seen[a["sha256"]] = {"answer_sha256": a["sha256"], "item_id": r.item_id, "trait": item.trait,
                                     "question": item.messages[-1]["content"], "answer": a["text"]}
    rows = sorted(seen.values(), key=lambda x: x["answer_sha256"])
    random.Random(0).shuffle(rows)
    path.write_text("".join(json.dumps(x) + "\n" for x in rows), encoding="utf-8")
    print(f"{len(rows)} distinct answers -> {path}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--export", type=Path)
    args = ap.parse_args()
    if args.export:
        export(args.folder, args.export)
    else:
        generate(args.folder)
