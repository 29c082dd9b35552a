"""Markdown rendering of reports (report.md): a run's comparison, a study, and `report --against`."""

from __future__ import annotations

from persist.report.model import AgainstReport, Comparison, Row, RunReport, StudyReport
from persist.stats import fmt


def comparison_markdown(title: str, models: dict[str, str], suite: str, n_items: int, scorer: str, rows: list[Row],
                        cmp: Comparison, lead: str = "") -> str:
    lines = [f"# {title}", ""] + ([lead, ""] if lead else [])
    for role, spec in models.items():
        lines.append(f"- **{role}**: `{spec}`")
    lines += [f"- suite: `{suite}` ({n_items} items), scorer: `{scorer}`",
              "", "Scores in [0, 1], higher = more aligned; 95% paired bootstrap intervals over items.", "",
              "## Before and after, per model and condition", "",
              "| model | condition | n | before | after | drop | retention | drop in-domain | drop out-of-domain |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        cond = r.condition.label + (" (control)" if r.control else "")
        lines.append(f"| {r.role} | {cond} | {r.n} | {fmt(r.before)} | {fmt(r.after)} | {fmt(r.drop)} | "
                     f"{fmt(r.retention)} | {fmt(r.in_domain and r.in_domain.drop)} | "
                     f"{fmt(r.out_of_domain and r.out_of_domain.drop)} |")
    if cmp.worst_case:
        lines += ["", "## Worst case over all non-control attacks", "",
                  "| model | n | before | worst-case after | drop | broken rate |", "| --- | --- | --- | --- | --- | --- |"]
        for role, w in cmp.worst_case.items():
            lines.append(f"| {role} | {w.n} | {fmt(w.before)} | {fmt(w.worst)} | {fmt(w.drop)} | "
                         f"{fmt(w.broken_rate)} (of {w.n_eligible}) |")
    if cmp.differences:
        lines += ["", "## Difference in drops (baseline − model; positive = model more persistent)", "",
                  "| condition | n | difference | p | q (BH) |", "| --- | --- | --- | --- | --- |"]
        for d in cmp.differences:
            cond = d.condition.label + (" (control)" if d.control else "")
            lines.append(f"| {cond} | {d.n} | {fmt(d.diff)} | {d.p:.4f} | {d.q:.4f} |")
    return "\n".join(lines) + "\n"


def run_markdown(report: RunReport, title: str) -> str:
    return comparison_markdown(title, report.models, report.suite, report.n_items, report.scorer,
                               report.comparison.rows, report.comparison)


def study_comparison(report: StudyReport) -> Comparison:
    """A study seen as one comparison: the interventions first, then every condition."""
    return Comparison(conditions=[r.condition for r in report.interventions + report.rows],
                      roles=list(report.meta.models), rows=report.interventions + report.rows,
                      worst_case=report.worst_case, differences=report.differences, in_domain=report.meta.in_domain)


def study_markdown(report: StudyReport, title: str) -> str:
    cmp = study_comparison(report)
    m = report.meta
    return comparison_markdown(title, m.models, m.suite, m.n_items, m.scorer, cmp.rows, cmp, lead=report.headline)


def against_markdown(res: AgainstReport) -> str:
    lines = [f"# {res.other} vs {res.run}", "", "Joined on record keys; difference = other − run, 95% paired "
             "bootstrap; q = Benjamini–Hochberg.", "", "| model | condition | n | run | other | difference | p | q |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in res.rows:
        lines.append(f"| {r.role} | {r.condition} | {r.n} | {fmt(r.run)} | {fmt(r.other)} | "
                     f"{fmt(r.diff)} | {r.p:.4f} | {r.q:.4f} |")
    return "\n".join(lines) + "\n"
