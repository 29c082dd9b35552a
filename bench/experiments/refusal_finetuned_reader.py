"""Does fine-tuning the reader beat the shipped linear read-out on real answers? One fold, side by side (issue 14).

    .venv/bin/python bench/experiments/refusal_finetuned_reader.py [FOLD] [EPOCHS]   # defaults 0 3; ~30 min, 2 cores
    .venv/bin/python bench/experiments/refusal_finetuned_reader.py --tiny   # 10 + 10 rows, tiny random encoder

The shipped refusal classifier is a logistic regression on frozen SmolLM2-135M-Instruct hidden states
(probes/refusal_model.py). Here the same encoder is fine-tuned instead: LoRA (r 16, alpha 32, dropout 0.05, every
attention and MLP projection) plus a linear head on the last token's final state, on the same input (the
conversation and the follow-up question, last 384 tokens), AdamW (LoRA 3e-4, head 1e-3, linear decay), batches
of 16 bucketed by length, bfloat16 autocast, seeded. Training data as the shipped classifier's: every written
string plus the real training answers outside the fold; the fold is one of refusal_readers.py's five
(grouped by request; the held-out real answers are never read). Prints the fold's refusal precision / recall and
3-way accuracy after each epoch, then the shipped linear read-out trained and tested on the same fold.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_TOKENS = 384


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fold", nargs="?", type=int, default=0, help="which of the five folds is tested (0-4)")
    ap.add_argument("epochs", nargs="?", type=int, default=3)
    ap.add_argument("--tiny", action="store_true", help="10 real and 10 written rows, 1 epoch, the tiny random "
                    "model as the encoder: bench/tiny.py")
    args = ap.parse_args(argv)

    from persist import plugins
    from persist.probes import refusal_model as m

    plugins.load()
    rows = m.real_answers("train")
    written = [r for name in m.TRAIN_FILES for r in m.read_labelled(m.DATA / name)]
    context = nullcontext()
    if args.tiny:
        from bench import tiny

        rows, written, args.epochs = rows[:10], written[::max(1, len(written) // 10)][:10], 1
        context = tiny.refusal_encoder(m)
    with context:
        side_by_side(m, rows, written, args.fold, args.epochs)
    return 0


def side_by_side(m, rows: list[dict], written: list[dict], k: int, epochs: int) -> None:  # noqa: ANN001
    """Fine-tuned reader, epoch by epoch, then the linear read-out, on fold k."""
    import copy

    import numpy as np
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    rng = random.Random(0)
    y = np.array([m.LABELS.index(r["label"]) for r in rows])
    yw = np.array([m.LABELS.index(r["label"]) for r in written])
    groups = sorted({r["item_id"] for r in rows})
    np.random.default_rng(0).shuffle(groups)  # the folds of refusal_readers.py
    fold = np.array([{g: j % 5 for j, g in enumerate(groups)}[r["item_id"]] for r in rows])
    encoder, tok = m._encoder()
    enc = [m._encode_one(tok, r["request"], r["text"])[0][-MAX_TOKENS:] for r in written + rows]
    labels = list(yw) + list(y)
    in_fold = [False] * len(written) + list(fold == k)
    train = [(e, int(c)) for e, c, f in zip(enc, labels, in_fold, strict=True) if not f]
    test = [(e, int(c)) for e, c, f in zip(enc, labels, in_fold, strict=True) if f]

    def batches(data: list, shuffle: bool):  # noqa: ANN202
        idx = sorted(range(len(data)), key=lambda i: len(data[i][0]))
        chunks = [idx[j:j + 16] for j in range(0, len(idx), 16)]
        if shuffle:
            rng.shuffle(chunks)
        for c in chunks:
            ids = torch.full((len(c), max(len(data[i][0]) for i in c)), tok.pad_token_id)
            mask = torch.zeros_like(ids)
            for r, i in enumerate(c):
                ids[r, :len(data[i][0])] = torch.tensor(data[i][0])
                mask[r, :len(data[i][0])] = 1
            yield c, ids, mask, torch.tensor([data[i][1] for i in c])

    model = get_peft_model(copy.deepcopy(encoder), LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.05,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    head = torch.nn.Linear(encoder.config.hidden_size, len(m.LABELS))

    def logits(ids, mask):  # noqa: ANN001, ANN202
        h = model.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        return head(h[torch.arange(len(ids)), mask.sum(1) - 1].float())

    lora = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": lora, "lr": 3e-4}, {"params": head.parameters(), "lr": 1e-3}],
                            weight_decay=0.0)
    steps = max(1, epochs * ((len(train) + 15) // 16))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / steps))
    t0 = time.perf_counter()
    print(f"fold {k}: {len(train)} training strings ({len(written)} written), {len(test)} real answers tested")
    for epoch in range(epochs):
        model.train()
        total = 0.0
        for c, ids, mask, lab in batches(train, True):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(logits(ids, mask).float(), lab)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(c)
        model.eval()
        pred = np.zeros(len(test), dtype=int)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            for c, ids, mask, _ in batches(test, False):
                pred[c] = logits(ids, mask).argmax(1).numpy()
        p, r, acc = m.precision_recall([m.LABELS[i] for i in pred], [m.LABELS[t[1]] for t in test])
        print(f"fine-tuned, epoch {epoch + 1}: train loss {total / len(train):.3f}  refusal P {p:.3f} R {r:.3f}  "
              f"3-way acc {acc:.3f}  ({time.perf_counter() - t0:.0f} s)", flush=True)
    x = m.features([r["request"] for r in rows], [r["text"] for r in rows])
    xw = m.features([r["request"] for r in written], [r["text"] for r in written])
    tr = fold != k
    params = m.fit(np.vstack([xw, x[tr]]), np.concatenate([yw, y[tr]]))
    pred = m.probabilities(params, x[~tr]).argmax(1)
    p, r, acc = m.precision_recall([m.LABELS[i] for i in pred], [m.LABELS[i] for i in y[~tr]])
    print(f"shipped linear read-out, same fold: refusal P {p:.3f} R {r:.3f}  3-way acc {acc:.3f}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # bench.* (tiny mode)
    sys.exit(main())
