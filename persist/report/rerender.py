"""`persist report RUN [--against OTHER]`: re-render a run's reports from its records, or compare two runs.

Two runs are joined on (model role, record key): a key fixes the item, suite version, condition, attack
version/params/variant and scorer config, so a joined pair is the same measurement taken twice. Runs whose
suite or attack versions differ are refused rather than silently compared.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from persist.api import Record
from persist.behaviour import read_labels
from persist.conditions import Condition
from persist.errors import ConfigError, DataError
from persist.report.model import AgainstReport, AgainstRow, StudyMeta, StudyReport, from_json
from persist.report.run import RunReport
from persist.stats import benjamini_hochberg, mean_ci, paired_diff_ci, paired_permutation_p
from persist.store import RunStore


def open_run(folder: Path) -> tuple[dict[str, Any], list[Record]]:
    folder = Path(folder)
    if not (folder / "header.json").is_file():
        raise ConfigError(f"{folder}: not a run folder (no header.json); pass a folder under runs/")
    store = RunStore(folder)
    try:
        return store.header(), list(store.records())
    except json.JSONDecodeError as exc:
        raise DataError(f"{folder}: unreadable header.json or records.jsonl ({exc}); rerun the job to repair it") from None


def rebuild(folder: Path) -> RunReport | StudyReport:
    """The run's report: rebuilt from its records where the job allows it (a study), else read from report.json."""
    header, records = open_run(folder)
    job = header.get("config", {}).get("job")
    if job == "study" and header.get("study_meta"):
        from persist.report.study import study_report

        return study_report(records, from_json(StudyMeta, header["study_meta"]), read_labels(folder))
    path = Path(folder) / "report.json"
    if not path.is_file():
        raise ConfigError(f"{folder}: no report.json yet; finish the run first (rerun its command to resume)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg}); rerun the job to rewrite it") from None
    return StudyReport.from_dict(data) if data.get("kind") == "study" else RunReport.from_dict(data)


def versions(header: dict[str, Any]) -> dict[str, Any]:
    scorer = header.get("scorer") or {}
    return {"suite_version": header.get("suite_version"), "scorer": (scorer.get("name"), scorer.get("version")),
            "attacks": {k: v.get("version") for k, v in (header.get("attacks") or {}).items()}}


def against(run: Path, other: Path) -> AgainstReport:
    """Per (role, condition): mean in each run on the joined keys, paired difference other - run, p and q."""
    h1, r1 = open_run(run)
    h2, r2 = open_run(other)
    v1, v2 = versions(h1), versions(h2)
    if v1["suite_version"] != v2["suite_version"]:
        raise ConfigError(f"suite versions differ ({v1['suite_version']} vs {v2['suite_version']}): the items "
                          "changed between the runs, so they cannot be joined")
    if v1["scorer"] != v2["scorer"]:
        raise ConfigError(f"scorer versions differ ({'/'.join(map(str, v1['scorer']))} vs "
                          f"{'/'.join(map(str, v2['scorer']))}): their scores mean different things; rerun one run "
                          "with the other's persist version")
    clash = sorted(k for k in set(v1["attacks"]) & set(v2["attacks"]) if v1["attacks"][k] != v2["attacks"][k])
    if clash:
        raise ConfigError(f"attack versions differ for {', '.join(clash)}: rerun one of the runs with the same "
                          "persist version")
    first = {(r.role, r.key): r for r in r1 if r.score is not None}
    pairs: dict[tuple[str, str, str], list[tuple[float, float]]] = defaultdict(list)
    for r in r2:
        a = first.get((r.role, r.key))
        if a is not None and a.score is not None and r.score is not None:
            pairs[(r.role, r.suite, r.condition)].append((float(a.score), float(r.score)))
    if not pairs:
        raise ConfigError(f"{run} and {other} share no records (same items, conditions and scorer); nothing to "
                          "compare")
    found = sorted(pairs.items())
    ps = [paired_permutation_p([y - x for x, y in ab]) for _, ab in found]
    rows = [AgainstRow(role=role, suite=suite, condition=Condition.parse(cond), n=len(ab), run=mean_ci([x for x, _ in ab]),
                       other=mean_ci([y for _, y in ab]), diff=paired_diff_ci([y for _, y in ab], [x for x, _ in ab]),
                       p=p, q=q)
            for ((role, suite, cond), ab), p, q in zip(found, ps, benjamini_hochberg(ps), strict=True)]
    return AgainstReport(run=str(run), other=str(other), rows=rows,
                         models={"run": h1.get("models"), "other": h2.get("models")})


def regrade(folder: Path) -> RunReport | StudyReport:
    """Rewrite a finished run's reports with its behaviour answers graded anew (after `persist probes grade`
    imported hand labels): a study is rebuilt from its records; an attack or fine-tune run keeps its report.json
    and gets its behaviour table recomputed from the records and the labels."""
    import dataclasses

    from persist.behaviour import split_behaviour
    from persist.report.behaviour import behaviour_rows
    from persist.report.write import study_title, write_reports, write_study_reports

    rep = rebuild(folder)
    if isinstance(rep, StudyReport):
        write_study_reports(folder, rep, study_title(rep))
        return rep
    _, records = open_run(folder)
    _, behaviour = split_behaviour(records)
    rep = dataclasses.replace(rep, behaviour=behaviour_rows(behaviour, read_labels(folder), rep.comparison.rows))
    md = Path(folder) / "report.md"
    first = md.read_text(encoding="utf-8").splitlines()[0] if md.is_file() else ""
    write_reports(folder, rep, first[2:] if first.startswith("# ") else f"{rep.kind}: {Path(folder).name}")
    return rep
