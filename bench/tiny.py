"""The bench scripts' --tiny mode, shared by peers/, experiments/ and tools/ (tests/test_bench_smoke.py runs it).

--tiny swaps the real model for persist's built-in `tiny-random` (a random 2-layer Llama on a byte-level
tokenizer, persist/tiny.py, written once into $PERSIST_HOME) and cuts every size to a handful, so a
script runs its whole persist-side path in seconds. Its figures measure nothing: the mode exists so that a moved
import or a changed API fails the smoke test instead of the next real run. Peers (lm-eval, TRL, garak's
generator) are never run under --tiny.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

MODEL = "tiny-random"
# The refusal classifier read at the tiny model's 2 layers, with answers cut short: its code path, in a second.
ENCODER = {"MEAN_LAYERS": (1,), "ASK_LAYERS": (1, 2), "MAX_CHARS": 300}


@contextmanager
def refusal_encoder(m: Any, fit_on: Sequence[dict[str, Any]] = ()) -> Iterator[None]:
    """Within the block, the refusal classifier (m: persist.probes.refusal_model) reads through the random tiny
    model instead of SmolLM2, at the layers and length of ENCODER; with `fit_on` (labelled rows with request and
    text) its weights are also replaced by a fit on those rows' tiny features (the shipped weights expect
    SmolLM2's features). Everything is put back on exit."""
    from persist.tiny import tiny_model, tiny_tokenizer

    pair = (tiny_model(), tiny_tokenizer())
    saved = {name: getattr(m, name) for name in ("_encoder", "load_params", *ENCODER)}
    m._encoder = lambda: pair
    for name, value in ENCODER.items():
        setattr(m, name, value)
    try:
        if fit_on:
            import numpy as np

            x = m.features([r["request"] for r in fit_on], [r["text"] for r in fit_on])
            params = m.fit(x, np.array([m.LABELS.index(r["label"]) for r in fit_on]))
            m.load_params = lambda path=None: params
        yield
    finally:
        for name, value in saved.items():
            setattr(m, name, value)
