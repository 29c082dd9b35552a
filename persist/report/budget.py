"""Attack-budget curves: how strong an optimised attack is for the compute spent on it, per model, and the paired
difference of the two models' curves.

Each optimised attack's artefact (its describe(): RUN/attacks/...) may carry `budget`: [prepared tokens, best-so-far
effect] after its start and after each step (the GCG suffix: lowest probe log-odds so far minus the starting
suffix's, on probe items that never steered it; PAIR: lowest train mean so far minus the train items' clean mean).
Both are in nats, <= 0, on items the attack was prepared on (not the held-out items it is reported on), so they say
how fast the attack's own objective falls with compute, not the held-out effect. The difference of two curves is
taken step by step (model - baseline, the same step of the same search), < 0: the model's objective fell further.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from persist.report.model import BudgetCurve
from persist.stats import NAN

BUDGET_NOTE = ("Attack-budget curves: each optimised attack's best-so-far effect on its own objective (nats, on the "
               "items it was prepared on, not the held-out items of its rows) against the compute spent preparing "
               "it (forward tokens, a backward token counted as two), and model − baseline step by step.")


def budget_curves(artefacts: Mapping[str, Mapping[str, Any]] | None) -> list[BudgetCurve]:
    """One curve per (condition, model role) whose artefact has a budget, and per condition with both roles the
    paired difference (role "model - baseline": tokens of the model's step, model minus baseline effect)."""
    out: list[BudgetCurve] = []
    for cond, per_role in sorted((artefacts or {}).items()):
        curves = {role: [list(map(float, p)) for p in d["budget"]] for role, d in sorted(per_role.items())
                  if isinstance(d, Mapping) and d.get("budget")}
        out += [BudgetCurve(role=role, condition=cond, points=pts) for role, pts in curves.items()]
        if "model" in curves and "baseline" in curves:
            m, b = curves["model"], curves["baseline"]
            out.append(BudgetCurve(role="model - baseline", condition=cond,
                                   points=[[pm[0], pm[1] - pb[1]] for pm, pb in zip(m, b)]))
    return out


def budget_table(curves: Sequence[BudgetCurve]) -> tuple[list[str], list[list[str]]]:
    head = ["attack", "model", "steps", "tokens spent", "effect at a quarter", "at half", "at the end (nats)"]
    body = []
    for c in curves:
        n = len(c.points)
        at = [c.points[min(n - 1, max(0, round(f * (n - 1))))][1] if n else NAN for f in (0.25, 0.5, 1.0)]
        body.append([c.condition, c.role, str(n - 1), f"{c.points[-1][0]:,.0f}" if n else "–",
                     *[f"{v:+.2f}" for v in at]])
    return head, body


def budget_figure(curves: Sequence[BudgetCurve]) -> Any:
    """A matplotlib figure: best-so-far effect against prepared tokens, one panel per attack."""
    from persist.report.html import _plt

    plt = _plt()
    conds = sorted({c.condition for c in curves})
    fig, axes = plt.subplots(1, max(1, len(conds)), figsize=(4 * max(1, len(conds)), 3), squeeze=False)
    for ax, cond in zip(axes[0], conds, strict=False):
        for c in curves:
            if c.condition == cond and c.points:
                ax.plot([p[0] for p in c.points], [p[1] for p in c.points], marker=".", label=c.role,
                        linestyle="--" if " - " in c.role else "-")
        ax.set_title(cond, fontsize=8)
        ax.set_xlabel("prepared tokens")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("best-so-far effect (nats)")
    return fig
