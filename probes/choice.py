"""The choice scorer: multiple-choice capability by likelihood, the way lm-evaluation-harness scores acc_norm.

Each option is scored as the model's reply to the question; the option with the highest log-likelihood per byte
is the model's answer (per byte, so a long option is not penalised for its length). Score 1 if that is the
correct option, else 0; the unit records every option's log-likelihood and which one won.

Items: `aligned` holds the one correct option, `misaligned` the distractors (the capability suite and the
multiple-choice loader in persist.probes.mc_sets write them so). Chance is 1 / (number of options).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from persist.api import ScoreResult
from persist.registry import SCORERS, PluginSpec, params_of
from persist.schema import Variant
from persist.scoring import prompt_chat
from persist.targets.base import Target


@SCORERS.register
@dataclass
class ChoiceScorer:
    name: ClassVar[str] = "choice"
    version: ClassVar[str] = "1"

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "normalise": "bytes"}

    def spec(self) -> PluginSpec:
        return PluginSpec(self.name, params_of(self))

    def check(self, units: Sequence[Variant]) -> None:
        return None

    def score(self, target: Target, units: Sequence[Variant]) -> list[ScoreResult]:
        requests = []
        for u in units:
            chat = prompt_chat(u)
            lead = " " if u.prefill and not u.prefill.endswith((" ", "\n")) else ""
            requests += [(chat, lead + o) for o in (*u.item.aligned, *u.item.misaligned)]
        logps = target.loglikelihood(requests)
        out, k = [], 0
        for u in units:
            options = (*u.item.aligned, *u.item.misaligned)
            lp = logps[k: k + len(options)]
            k += len(options)
            per_byte = [v / max(1, len(o.encode("utf-8"))) for v, o in zip(lp, options, strict=True)]
            chosen = max(range(len(options)), key=lambda j: per_byte[j])
            out.append(ScoreResult(float(chosen == 0), {"choice": chosen, "options": len(options), "logp": lp}))
        return out
