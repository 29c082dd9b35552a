"""report.html for a study: one self-contained file (inline CSS, inline SVG from matplotlib, no requests).

Every piece of text that comes from a model, a user or a data file goes through html.escape; plots carry only
our own labels (trait, domain and model names, also escaped by matplotlib's SVG writer).
"""

from __future__ import annotations

import html
import io
import re
from typing import Any

from persist.conditions import Condition
from persist.report.factorial import study_sections
from persist.report.markdown import (
    CAPABILITY_NOTE,
    INTERVALS_NOTE,
    REFUSAL_NOTE,
    SCORE_NOTE,
    SHIFT_NOTE,
    SUBJECT_NOTE,
    effect_note,
)
from persist.report.model import StudyReport, Sweep
from persist.report.study import FINETUNE, PROMPT
from persist.report.tables import (
    FLOOR_MARK,
    RATES_NOTE,
    SEEDS_NOTE,
    SWEEP_NOTE,
    Table,
    broken,
    capability_table,
    difference_table,
    rates_table,
    refusal_table,
    score_table,
    shift_table,
    subject_table,
    sweep_tables,
)
from persist.stats import Estimate

COLORS = {"model": "#2b6cb0", "baseline": "#c05621"}
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#1a202c;line-height:1.45}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #e2e8f0;padding-bottom:.2em}
.headline{background:#ebf8ff;border-left:4px solid #2b6cb0;padding:.8em 1em}
table{border-collapse:collapse;font-size:.88em;margin:.6em 0}td,th{border:1px solid #e2e8f0;padding:.3em .5em;
text-align:left;vertical-align:top}th{background:#f7fafc}
.fig{margin:1em 0}.fig svg{max-width:100%;height:auto}.note{color:#4a5568;font-size:.9em}
pre{white-space:pre-wrap;word-wrap:break-word;margin:0;font-size:.85em;max-width:480px}
tr.bound td{color:#718096;background:#fffaf0}
"""


def esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def svg(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)  # creator/date RDF block: not needed inline
    return text[text.index("<svg"):]  # drop the XML prolog and doctype: inline SVG in HTML5


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams.update({"svg.hashsalt": "persist", "svg.fonttype": "none", "font.size": 9})
    import matplotlib.pyplot as plt

    return plt


def _err(est: Estimate | Any) -> list[float]:
    """Whisker lengths; none where a cell has too few items for an interval."""
    if not (est.lo == est.lo and est.hi == est.hi):
        return [0.0, 0.0]
    return [est.value - est.lo, est.hi - est.value]


def figure_before_after(report: StudyReport) -> str:
    """The paper-style figure: before/after bars per model per intervention, 95% interval whiskers."""
    plt = _plt()
    rows = {(r.role, r.condition): r for r in report.interventions}
    groups = [(PROMPT, "prompt attacks"), (FINETUNE, f"fine-tune: {report.meta.recipe}")]
    roles = list(report.meta.models)
    fig, axes = plt.subplots(1, len(groups), figsize=(8, 3.4), sharey=True)
    for ax, (cond, title) in zip(axes, groups, strict=True):
        for j, role in enumerate(roles):
            r = rows.get((role, cond))
            if r is None:
                continue
            for k, (key, alpha) in enumerate((("before", 0.45), ("after", 1.0))):
                est = getattr(r.overall, key)
                ax.bar(j * 2.6 + k, est.value, yerr=[[_err(est)[0]], [_err(est)[1]]], capsize=3,
                       color=COLORS.get(role, "#718096"), alpha=alpha, width=0.9,
                       label=f"{role} {key}" if cond == PROMPT else None)
        ax.set_xticks([j * 2.6 + 0.5 for j in range(len(roles))], roles)
        ax.set_title(title)
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("alignment score (before: light, after: dark)")
    axes[0].legend(fontsize=7, loc="upper left", ncol=2)
    return svg(fig)


def figure_curves(report: StudyReport) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for role, pts in report.curves.items():
        if not pts:
            continue
        x = [p.dose for p in pts]
        ax.plot(x, [p.value for p in pts], marker="o", color=COLORS.get(role, "#718096"), label=role)
        ax.fill_between(x, [p.lo for p in pts], [p.hi for p in pts], color=COLORS.get(role, "#718096"),
                        alpha=0.15)
    ax.set_xlabel(f"fine-tuning dose ({report.meta.recipe}, optimizer steps)")
    ax.set_ylabel("mean alignment score")
    ax.grid(alpha=0.3)
    ax.legend()
    return svg(fig)


def figure_heatmaps(report: StudyReport) -> str:
    plt = _plt()
    maps = report.heatmaps
    if not maps:
        return "<p class='note'>No heatmap: no intervention scores.</p>"
    keys = sorted(maps)
    ncol = 2
    nrow = (len(keys) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(10, 3.2 * nrow), squeeze=False)
    vmax = max([abs(v) for m in maps.values() for row in m.drop for v in row if v is not None] + [0.01])
    for ax, key in zip(axes.flat, keys, strict=False):
        m = maps[key]
        data = [[float("nan") if v is None else v for v in row] for row in m.drop]
        im = ax.imshow(data, cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto")
        ax.set_xticks(range(len(m.domains)), m.domains, rotation=30, ha="right")
        ax.set_yticks(range(len(m.traits)), m.traits)
        role, cond = key.split("/", 1)
        ax.set_title(f"{role}: drop under {Condition.parse(cond).short}")
        fig.colorbar(im, ax=ax, fraction=0.046)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.tight_layout()
    return svg(fig)


def figure_domains(report: StudyReport) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    labels, x = [], 0
    for r in report.interventions:
        for k, (part, hatch) in enumerate(((r.in_domain, ""), (r.out_of_domain, "//"))):
            est = part and part.drop
            if est and est.value == est.value:
                ax.bar(x + k, est.value, yerr=[[_err(est)[0]], [_err(est)[1]]], capsize=3, hatch=hatch,
                       color=COLORS.get(r.role, "#718096"), alpha=0.8, width=0.9)
        labels.append((x + 0.5, f"{r.role}\n{r.condition.short}"))
        x += 3
    ax.set_xticks([p for p, _ in labels], [t for _, t in labels], fontsize=7)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_ylabel(f"drop (solid: {report.meta.in_domain}, hatched: other domains)")
    ax.grid(axis="y", alpha=0.3)
    return svg(fig)


def html_table(table: Table) -> str:
    head, body = table
    out = ["<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"]
    for row in body:
        cls = " class='bound'" if any(FLOOR_MARK in c for c in row) else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>")
    return "\n".join(out) + "</table>"


def figure_shifts(report: StudyReport) -> str:
    """The primary statistic: each model's mean log-odds shift per intervention and condition, 95% whiskers."""
    plt = _plt()
    rows = [r for r in report.interventions + report.rows if r.overall.shift is not None]
    if not rows:
        return "<p class='note'>No log-odds: this scorer does not give one (the 0-1 score below is primary).</p>"
    conds = list(dict.fromkeys(r.condition for r in rows))
    roles = list(report.meta.models)
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(conds) + 1.2))
    for j, role in enumerate(roles):
        for i, cond in enumerate(conds):
            r = next((x for x in rows if x.role == role and x.condition == cond), None)
            if r is None:
                continue
            est = r.overall.shift.shift  # type: ignore[union-attr]
            ax.errorbar(est.value, i + (j - 0.5) * 0.3, xerr=[[_err(est)[0]], [_err(est)[1]]], fmt="o", capsize=3,
                        color=COLORS.get(role, "#718096"), label=role if i == 0 else None)
    ax.axvline(0, color="black", lw=0.6)
    ax.set_yticks(range(len(conds)), [c.short for c in conds], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("log-odds shift, after − before (nats; < 0 = toward misaligned)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7)
    return svg(fig)


def _examples(report: StudyReport) -> str:
    if not report.examples:
        return ("<p class='note'>No example answers: this study used a scorer that reads log-probabilities and "
                "generates nothing (run with <code>--scorer judge</code> or <code>refusal</code> to see answers)."
                "</p>")
    out = ["<table><tr><th>item</th><th>before</th><th>after</th></tr>"]
    for e in report.examples:
        out.append(f"<tr><td>{esc(e.item_id)}<br>{esc(e.trait)} / {esc(e.domain)}<br>"
                   f"{esc(e.condition)}</td>"
                   f"<td>score {e.before.score:.2f}<pre>{esc(e.before.answer)}</pre></td>"
                   f"<td>score {e.after.score:.2f}<pre>{esc(e.after.answer)}</pre></td></tr>")
    return "\n".join(out) + "</table>"


def _sweep(sw: Sweep) -> list[str]:
    out = [f"<h2>Each model at its own worst case ({esc(sw.recipe)} sweep, {esc(sw.plan)})</h2>",
           f"<p class='note'>{esc(SWEEP_NOTE)}</p>"]
    for sentence, table in sweep_tables(sw):
        out += [f"<p>{esc(sentence)}</p>", html_table(table)]
    return out


def budget_svg(report: StudyReport) -> str:
    """The attack-budget curves (persist.report.budget) as an inline figure."""
    from persist.report.budget import budget_figure

    return svg(budget_figure(report.meta.budget))


def render_html(report: StudyReport, title: str) -> str:
    meta = report.meta
    models = "".join(f"<li><b>{esc(role)}</b>: <code>{esc(spec)}</code></li>" for role, spec in meta.models.items())
    controls = [r for r in report.rows if r.control]
    degenerate = [f"{role}: {cond}" for role, conds in report.fluency.items() for cond, f in conds.items()
                  if f.degenerate]
    judge = meta.judge_check
    shifts = any(r.overall.shift is not None for r in report.interventions + report.rows)
    broke = broken(report.capability)
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>",
        f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1>",
        f"<p class='headline'>{esc(report.headline)}</p>",
        f"<ul>{models}<li>suite <code>{esc(meta.suite)}</code> ({meta.n_items} items), scorer "
        f"<code>{esc(meta.scorer)}</code>, profile <code>{esc(meta.profile)}</code>, fine-tune recipe "
        f"<code>{esc(meta.recipe)}</code> at doses {esc(meta.doses)}, control recipe "
        f"<code>{esc(meta.control_recipe)}</code></li></ul>",
        f"<p class='note'>{esc(INTERVALS_NOTE)} Differences between the models are positive when the model is "
        "more persistent.</p>",
        *([f"<p class='note'>{esc(SEEDS_NOTE)}</p>"] if any(r.condition.trained for r in report.rows) else []),
        *([f"<p class='note'>Judge calibration (AUROC on the items' own references): {esc(judge.get('auroc'))}</p>"]
          if judge else []),
        *(["<h2>Paired shift of the log-odds (primary)</h2>", f"<p class='note'>{esc(SHIFT_NOTE)}</p>",
            f"<div class='fig'>{figure_shifts(report)}</div>",
            html_table(shift_table(report.interventions + report.rows, broke))] if shifts else []),
        "<h2>Before and after on the 0–1 score, per model and intervention</h2>",
        f"<div class='fig'>{figure_before_after(report)}</div>",
        html_table(score_table(report.interventions, broke)),
        "<h2>Persistence over fine-tuning dose</h2>", f"<div class='fig'>{figure_curves(report)}</div>",
        "<h2>Where the drop happens: trait × domain</h2>", f"<div class='fig'>{figure_heatmaps(report)}</div>",
        f"<h2>In-domain ({esc(meta.in_domain)}) vs other domains</h2>",
        f"<div class='fig'>{figure_domains(report)}</div>",
        "<h2>Controls (expected not to lower scores)</h2>",
        html_table(shift_table(controls) if shifts else score_table(controls)) if controls
        else "<p class='note'>No controls in this run.</p>",
        *(part for title, note, table in study_sections(report)
          for part in (f"<h2>{esc(title)}</h2>", f"<p class='note'>{esc(note)}</p>", html_table(table))),
        *([f"<div class='fig'>{budget_svg(report)}</div>"] if report.meta.budget else []),
        "<h2>Every condition: the 0–1 score</h2>", f"<p class='note'>{esc(SCORE_NOTE)}</p>",
        html_table(score_table(report.rows, broke)),
        *(["<h2>Harmful requests declined beside benign look-alikes refused</h2>",
            f"<p class='note'>{esc(REFUSAL_NOTE)}</p>", html_table(refusal_table(report.refusal))]
          if report.refusal else []),
        *(["<h2>Refusal rates, raw and corrected for the classifier's errors</h2>",
            f"<p class='note'>{esc(RATES_NOTE)}</p>", html_table(rates_table(report.rates))]
          if report.rates else []),
        "<h2>Capability: does the model still work?</h2>", f"<p class='note'>{esc(CAPABILITY_NOTE)}</p>",
        html_table(capability_table(report.capability)) + f"<p class='note'>{esc(SUBJECT_NOTE)}</p>"
        + html_table(subject_table(report.capability)) if report.capability
        else "<p class='note'>No capability check in this run (--capability 0).</p>",
        "<h2>Difference between the models</h2>", f"<p class='note'>{esc(effect_note(report.effect))}</p>",
        html_table(difference_table(report.differences, report.effect)),
        *(_sweep(report.sweep) if report.sweep is not None else []),
        "<h2>Fluency check</h2>",
        f"<p class='note'>{'Degenerate (scores not interpretable): ' + esc(', '.join(degenerate)) if degenerate else 'No condition left a model degenerate (reference likelihood per byte within 1.5x of clean).'}</p>",
        "<h2>Example answers before and after</h2>", _examples(report),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
