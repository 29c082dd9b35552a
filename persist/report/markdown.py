"""Markdown rendering of comparison reports (report.md), and writing report.json / report.md atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from persist.store import atomic_write_text


def fmt(est: dict[str, Any] | None, digits: int = 3) -> str:
    if not est or est.get("value") is None or est["value"] != est["value"]:
        return "–"
    return f"{est['value']:.{digits}f} [{est['lo']:.{digits}f}, {est['hi']:.{digits}f}]"


def render_markdown(report: dict[str, Any], title: str) -> str:
    models = report.get("models", {})
    lines = [f"# {title}", ""]
    for role, spec in models.items():
        lines.append(f"- **{role}**: `{spec}`")
    lines += [f"- suite: `{report.get('suite')}` ({report.get('n_items')} items), scorer: `{report.get('scorer')}`",
              "", "Scores in [0, 1], higher = more aligned; 95% paired bootstrap intervals over items.", "",
              "## Before and after, per model and condition", "",
              "| model | condition | n | before | after | drop | retention | drop in-domain | drop out-of-domain |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in report["rows"]:
        cond = r["condition"] + (" (control)" if r["control"] else "")
        ind, outd = r.get("in_domain"), r.get("out_of_domain")
        lines.append(f"| {r['role']} | {cond} | {r['n']} | {fmt(r['before'])} | {fmt(r['after'])} | "
                     f"{fmt(r['drop'])} | {fmt(r['retention'])} | {fmt(ind and ind['drop'])} | "
                     f"{fmt(outd and outd['drop'])} |")
    if report.get("worst_case"):
        lines += ["", "## Worst case over all non-control attacks", "",
                  "| model | n | before | worst-case after | drop | broken rate |", "| --- | --- | --- | --- | --- | --- |"]
        for role, w in report["worst_case"].items():
            lines.append(f"| {role} | {w['n']} | {fmt(w['before'])} | {fmt(w['worst'])} | {fmt(w['drop'])} | "
                         f"{fmt(w['broken_rate'])} (of {w['n_eligible']}) |")
    if report.get("differences"):
        lines += ["", "## Difference in drops (baseline − model; positive = model more persistent)", "",
                  "| condition | n | difference | p | q (BH) |", "| --- | --- | --- | --- | --- |"]
        for d in report["differences"]:
            cond = d["condition"] + (" (control)" if d["control"] else "")
            lines.append(f"| {cond} | {d['n']} | {fmt(d['diff'])} | {d['p']:.4f} | {d['q']:.4f} |")
    return "\n".join(lines) + "\n"


def write_reports(folder: Path, report: dict[str, Any], title: str) -> None:
    atomic_write_text(Path(folder) / "report.json", json.dumps(report, indent=2, sort_keys=True) + "\n")
    atomic_write_text(Path(folder) / "report.md", render_markdown(report, title))


def flat_study(report: dict[str, Any]) -> dict[str, Any]:
    """A study report in the shape render_markdown / print_comparison read: interventions first, then conditions."""
    meta = report["meta"]
    return {"models": meta["models"], "suite": meta["suite"], "n_items": meta["n_items"], "scorer": meta["scorer"],
            "rows": report["interventions"] + report["rows"], "worst_case": report["worst_case"],
            "differences": report["differences"]}


def write_study_reports(folder: Path, report: dict[str, Any], title: str) -> None:
    from persist.report.html import render_html

    md = render_markdown(flat_study(report), title).replace("\n", f"\n{report['headline']}\n\n", 1)
    atomic_write_text(Path(folder) / "report.json", json.dumps(report, indent=2, sort_keys=True) + "\n")
    atomic_write_text(Path(folder) / "report.md", md)
    atomic_write_text(Path(folder) / "report.html", render_html(report, title))
