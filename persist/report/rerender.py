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

from persist.errors import ConfigError, DataError
from persist.stats import benjamini_hochberg, mean_ci, paired_diff_ci, paired_permutation_p
from persist.store import RunStore


def open_run(folder: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    folder = Path(folder)
    if not (folder / "header.json").is_file():
        raise ConfigError(f"{folder}: not a run folder (no header.json); pass a folder under runs/")
    store = RunStore(folder)
    try:
        return store.header(), list(store.records())
    except json.JSONDecodeError as exc:
        raise DataError(f"{folder}: unreadable header.json or records.jsonl ({exc}); rerun the job to repair it") from None


def rebuild(folder: Path) -> tuple[dict[str, Any], str]:
    """(report, kind) rebuilt from records where the job allows it, else read from report.json."""
    header, records = open_run(folder)
    job = header.get("config", {}).get("job")
    if job == "study" and header.get("study_meta"):
        from persist.report.study import study_report

        return study_report(records, header["study_meta"]), "study"
    path = Path(folder) / "report.json"
    if not path.is_file():
        raise ConfigError(f"{folder}: no report.json yet; finish the run first (rerun its command to resume)")
    report = json.loads(path.read_text(encoding="utf-8"))
    return report, report.get("kind", job or "unknown")


def versions(header: dict[str, Any]) -> dict[str, Any]:
    return {"suite_version": header.get("suite_version"),
            "attacks": {k: v.get("version") for k, v in (header.get("attacks") or {}).items()}}


def against(run: Path, other: Path) -> dict[str, Any]:
    """Per (role, condition): mean in each run on the joined keys, paired difference other - run, p and q."""
    h1, r1 = open_run(run)
    h2, r2 = open_run(other)
    v1, v2 = versions(h1), versions(h2)
    if v1["suite_version"] != v2["suite_version"]:
        raise ConfigError(f"suite versions differ ({v1['suite_version']} vs {v2['suite_version']}): the items "
                          "changed between the runs, so they cannot be joined")
    clash = sorted(k for k in set(v1["attacks"]) & set(v2["attacks"]) if v1["attacks"][k] != v2["attacks"][k])
    if clash:
        raise ConfigError(f"attack versions differ for {', '.join(clash)}: rerun one of the runs with the same "
                          "persist version")
    first = {(r["role"], r["key"]): r for r in r1 if r.get("score") is not None}
    pairs: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for r in r2:
        a = first.get((r["role"], r["key"]))
        if a is not None and r.get("score") is not None:
            pairs[(r["role"], r["condition"])].append((float(a["score"]), float(r["score"])))
    if not pairs:
        raise ConfigError(f"{run} and {other} share no records (same items, conditions and scorer); nothing to "
                          "compare")
    rows = []
    for (role, cond), ab in sorted(pairs.items()):
        a, b = [x for x, _ in ab], [y for _, y in ab]
        rows.append({"role": role, "condition": cond, "n": len(ab), "run": mean_ci(a).to_dict(),
                     "other": mean_ci(b).to_dict(), "diff": paired_diff_ci(b, a).to_dict(),
                     "p": paired_permutation_p([y - x for x, y in ab])})
    for row, q in zip(rows, benjamini_hochberg([r["p"] for r in rows]), strict=True):
        row["q"] = q
    return {"kind": "against", "run": str(run), "other": str(other), "rows": rows,
            "models": {"run": h1.get("models"), "other": h2.get("models")}}


def against_markdown(res: dict[str, Any]) -> str:
    from persist.report.markdown import fmt

    lines = [f"# {res['other']} vs {res['run']}", "", "Joined on record keys; difference = other − run, 95% paired "
             "bootstrap; q = Benjamini–Hochberg.", "", "| model | condition | n | run | other | difference | p | q |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in res["rows"]:
        lines.append(f"| {r['role']} | {r['condition']} | {r['n']} | {fmt(r['run'])} | {fmt(r['other'])} | "
                     f"{fmt(r['diff'])} | {r['p']:.4f} | {r['q']:.4f} |")
    return "\n".join(lines) + "\n"
