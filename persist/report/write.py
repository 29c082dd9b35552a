"""Writing a run's reports: report.json (the typed report as JSON) and its renderings, each written atomically."""

from __future__ import annotations

import json
from pathlib import Path

from persist.report.model import StudyReport
from persist.report.run import RunReport
from persist.store import atomic_write_text


def report_json(report: RunReport | StudyReport) -> str:
    return json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n"


def write_reports(folder: Path, report: RunReport, title: str) -> None:
    from persist.report.markdown import run_markdown

    atomic_write_text(Path(folder) / "report.json", report_json(report))
    atomic_write_text(Path(folder) / "report.md", run_markdown(report, title))
    if report.budget:  # the attack-budget curves as a plot beside the report
        from persist.report.budget import budget_figure
        from persist.report.html import svg

        atomic_write_text(Path(folder) / "budget.svg", svg(budget_figure(report.budget)))


def write_study_reports(folder: Path, report: StudyReport, title: str) -> None:
    from persist.report.html import render_html
    from persist.report.markdown import study_markdown

    atomic_write_text(Path(folder) / "report.json", report_json(report))
    atomic_write_text(Path(folder) / "report.md", study_markdown(report, title))
    atomic_write_text(Path(folder) / "report.html", render_html(report, title))


def study_title(report: StudyReport) -> str:
    return f"Persistence study: {report.meta.models.get('model')} vs {report.meta.models.get('baseline')}"
