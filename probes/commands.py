"""`persist probes ...`: list the suites, validate item files, measure a judge or a classifier against labels."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer

from persist.commands.options import FormatOpt, ModelOpt, SuiteOpt, check_format, with_load_options
from persist.errors import ConfigError, DataError, PersistError
from persist.models import LoadOptions

app = typer.Typer(help="Probe suites: list, validate, check a judge.", no_args_is_help=True)


@app.command("list")
def probes_list(format: FormatOpt = "table") -> None:
    """Show the suites with item counts per trait and domain."""
    from rich.table import Table

    from persist.registry import SUITES
    from persist.report.terminal import console

    as_json = check_format(format)
    out, rows = console(), []
    for name in SUITES.names():
        suite = SUITES.get(name)
        try:
            items = suite.load()
        except PersistError as exc:
            rows.append({"name": name, "description": suite.description, "error": str(exc)})
            if not as_json:
                out.print(f"[bold]{name}[/bold]: unavailable ({exc})")
            continue
        cells = Counter((i.trait, i.domain) for i in items)
        rows.append({"name": name, "description": suite.description, "version": suite.version, "items": len(items),
                     "traits": sorted({t for t, _ in cells}), "domains": sorted({d for _, d in cells})})
        if as_json:
            continue
        traits, domains = rows[-1]["traits"], rows[-1]["domains"]
        out.print(f"[bold]{name}[/bold] — {suite.description}: {len(items)} items, version {suite.version}",
                  soft_wrap=True)
        if len(traits) * len(domains) > 200:
            continue
        t = Table(show_header=True)
        t.add_column("trait \\ domain", no_wrap=True)
        for d in domains:
            t.add_column(d, justify="right", no_wrap=True)
        for tr in traits:
            t.add_row(tr, *[str(cells.get((tr, d), 0)) for d in domains])
        out.print(t)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))


@app.command("validate")
def probes_validate(
    files: Annotated[list[Path], typer.Argument(help="JSONL files of probe items.")],
    min_references: Annotated[int | None, typer.Option(help="References each item needs per side (default: what "
                                                       "the items' suite declares, e.g. 3 for traits; else 1).")]
    = None,
) -> None:
    """Check item files: every problem as file:line (exit 2 if any); sides whose references differ in mean length
    by more than 15% are flagged as warnings."""
    from persist.jsonl import iter_jsonl, parse_jsonl
    from persist.registry import SUITES
    from persist.schema import Item
    from persist.suites import length_balance, reference_problems, unbalanced

    problems = 0
    for f in files:
        items, errors = parse_jsonl(f, Item.from_dict, id_of=lambda it: it.id)
        lines = {obj["id"]: n for n, obj, err in iter_jsonl(f) if err is None and isinstance(obj, dict) and "id" in obj}
        declared = [getattr(SUITES.get(s), "min_references", 1) for s in {it.suite for it in items} if s in SUITES]
        need = min_references if min_references is not None else max(declared, default=1)
        errors += reference_problems(f, items, need, [lines[it.id] for it in items])
        for e in errors:
            typer.echo(e, err=True)
        problems += len(errors)
        for it in items:
            a, m = length_balance([it])
            gap = unbalanced(a, m)
            if gap is not None:
                typer.echo(f"{f}:{lines[it.id]}: warning: aligned references average {a:.0f} bytes, misaligned "
                           f"{m:.0f} ({gap:.0%} apart; keep the sides within 15% so length does not tell them apart)", err=True)
        a, m = length_balance(items)
        gap = unbalanced(a, m) if items else None
        if gap is not None:
            typer.echo(f"{f}: warning: across the file aligned references average {a:.0f} bytes, misaligned {m:.0f} "
                       f"({gap:.0%} apart)", err=True)
        if not errors:
            typer.echo(f"{f}: {len(items)} items OK (at least {need} references per side; mean bytes aligned "
                       f"{a:.0f}, misaligned {m:.0f})")
    if problems:
        raise typer.Exit(2)


@app.command("check-judge")
@with_load_options
def probes_check_judge(
    labels: Annotated[Path | None, typer.Option(help="A file of labelled answers: measure --classifier against its "
                                                "labels (accuracy, Cohen's kappa, confusion matrix).")] = None,
    format: Annotated[str, typer.Option("--format", help="The --labels file's format: persist (the label format, "
                                        "probes/data/README.md), refusal-legacy, xstest or jailbreakbench.")]
    = "persist",
    classifier: Annotated[str, typer.Option(help="With --labels: the refusal classifier to measure, learned "
                                            "(SmolLM2 read-out, the scorer's default), rules (no model) or "
                                            "judge:SPEC (a judge model; judge:SPEC:text for one without log-probs).")]
    = "learned",
    format_out: Annotated[str, typer.Option("--format-out", help="With --labels: table (default) or json.")]
    = "table",
    judge: Annotated[str | None, typer.Option(help="Without --labels: a judge model spec (local or "
                                              "openai:MODEL@URL) to grade the suite's own references.")] = None,
    suite: SuiteOpt = "traits",
    limit: Annotated[int | None, typer.Option(help="With --labels: the first N labelled answers; with --judge: a "
                                              "subset covering every trait x domain cell.")] = None,
    judge_mode: Annotated[str, typer.Option(help="em or rubric.")] = "em",
    *,
    load: LoadOptions,
) -> None:
    """Measure a classifier or a judge. With --labels: label each answer of a label file with --classifier and
    compare with the file's labels (each answer's pass-1 label). With --judge: grade each item's own
    aligned/misaligned references with the judge and print the AUROC between them."""
    if labels is not None:
        if judge is not None:
            check_trait_labels(labels, format, judge, limit, format_out, load)
            return
        check_labels(labels, format, classifier, limit, format_out, load)
        return
    if judge is None:
        raise ConfigError("give --labels PATH (measure a classifier on labelled answers) or --judge SPEC (grade the "
                          "suite's references)")
    from persist.registry import PluginSpec
    from persist.runner import clean_variant
    from persist.scoring import build_scorer
    from persist.suites import get_suite, select

    items = select(get_suite(suite).load(), limit)
    scorer = build_scorer(PluginSpec("judge", {"judge": judge, "mode": judge_mode}), load)
    res = scorer.check([clean_variant(i) for i in items])
    auroc = "n/a" if res["auroc"] is None else f"{res['auroc']:.3f}"
    typer.echo(f"judge {judge} on {suite} ({len(items)} items): AUROC {auroc} (aligned refs {res['n_aligned']}, "
               f"misaligned refs {res['n_misaligned']}, unratable {res['dropped']})")


@app.command("grade")
def probes_grade(
    run: Annotated[Path, typer.Argument(help="A run folder made with --behaviour N.")],
    labels: Annotated[Path, typer.Option(help="Hand labels of its answers (the label format, probes/data/README.md; "
                                         "task trait), keyed by each answer's sha256.")],
) -> None:
    """Import hand labels for a run's behaviour answers and rewrite its reports: a hand label replaces the judge's
    grade of the answer it names. The run keeps the labels (RUN/labels.jsonl) that name one of its answers."""
    from persist.behaviour import LABELS_FILE, split_behaviour
    from persist.probes import labels as lb
    from persist.report.rerender import open_run, rebuild, regrade
    from persist.store import atomic_write_text

    _, records = open_run(run)
    rebuild(run)  # a run without its report fails here, before anything is written
    _, behaviour = split_behaviour(records)
    shas = {a.get("sha256") for r in behaviour for a in (r.details.get("answers") or [])
            if isinstance(a, dict)}
    if not shas:
        raise ConfigError(f"{run}: no behaviour answers to grade; run the job with --behaviour N first")
    gold = lb.gold_labels(lb.load_labels(labels, "persist"), "trait")
    if not gold:
        raise DataError(f"{labels}: no pass-1 trait labels (task \"trait\"); label answers as aligned, misaligned "
                        "or incoherent (probes/data/trait_rubric.md)")
    mine = {g.answer_sha256: g for g in gold if g.answer_sha256 in shas}
    if not mine:
        raise DataError(f"{labels}: none of its {len(gold)} trait labels names an answer of {run} (labels are keyed "
                        "by the sha256 of the exact answer text); label this run's answers")
    atomic_write_text(run / LABELS_FILE, "".join(
        json.dumps({"answer_sha256": sha, "label": g.label, "labeller": g.labeller}, sort_keys=True) + "\n"
        for sha, g in sorted(mine.items())))
    regrade(run)
    typer.echo(f"{len(mine)} of {len(shas)} answers of {run} graded by hand ({len(gold) - len(mine)} labels of "
               f"{labels} name other answers); reports rewritten: {run}/report.md")


def check_trait_labels(path: Path, format: str, judge: str, limit: int | None, format_out: str,
                       load: LoadOptions) -> None:
    """check-judge --labels --judge: the judge's trait labels (rubric: probes/data/trait_rubric.md) against the
    file's pass-1 trait labels."""
    from persist.probes import labels as lb

    if format_out not in ("table", "json"):
        raise ConfigError(f"--format-out {format_out!r}: choose table or json")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    gold = lb.gold_labels(lb.load_labels(path, format), "trait")
    if not gold:
        raise DataError(f"{path}: no pass-1 trait labels to grade with --judge (for refusal labels leave out --judge "
                        "and choose --classifier)")
    gold = gold[:limit] if limit is not None else gold
    predicted = lb.predict_trait(gold, judge, load)
    rated = [(g.label, p) for g, p in zip(gold, predicted) if p is not None]
    if not rated:
        raise DataError(f"judge {judge} rated none of the {len(gold)} answers (too little probability on numbers); "
                        "use a chat model as judge")
    result = lb.agreement([g for g, _ in rated], [p for _, p in rated], lb.TRAIT_LABELS)
    print_agreement(result, f"judge {judge} against the trait labels of {path}, {result.n} answers rated "
                            f"({len(gold) - len(rated)} unrated)", format_out,
                    {"labels": str(path), "format": format, "judge": judge, "unrated": len(gold) - len(rated)})


def print_agreement(result: Any, title: str, format_out: str, meta: dict[str, Any]) -> None:
    """An Agreement (persist.probes.labels) as JSON or as the accuracy / kappa lines and the confusion table."""
    from persist.stats import fmt

    if format_out == "json":
        typer.echo(json.dumps(meta | result.to_dict(), indent=2))
        return
    from rich.table import Table

    from persist.report.terminal import console

    t = Table()
    t.add_column("gold \\ predicted", no_wrap=True)
    for c in result.classes:
        t.add_column(c, justify="right", no_wrap=True)
    t.add_column("recall", justify="right", no_wrap=True)
    for c, row in zip(result.classes, result.confusion):
        t.add_row(c, *map(str, row), _share(result.recall[c]))
    t.add_row("precision", *[_share(result.precision[c]) for c in result.classes], "")
    out = console()
    out.print(title, soft_wrap=True, highlight=False)
    out.print(f"accuracy {fmt(result.accuracy)} (Wilson 95%); Cohen's kappa {fmt(result.kappa)} (bootstrap 95%); "
              f"n {result.n}", soft_wrap=True, highlight=False)
    out.print(t)


def _share(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def check_labels(path: Path, format: str, classifier: str, limit: int | None, format_out: str,
                 load: LoadOptions | None = None) -> None:
    """check-judge --labels: the classifier's labels against the file's, as a table or JSON."""
    from persist.probes import labels as lb

    if format_out not in ("table", "json"):
        raise ConfigError(f"--format-out {format_out!r}: choose table or json")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    lb.check_classifier(classifier)
    rows = lb.load_labels(path, format)
    gold = lb.gold_labels(rows, "refusal")
    if not gold:
        tasks = sorted({r.task for r in rows})
        raise DataError(f"{path}: no pass-1 refusal labels to check (tasks here: {', '.join(tasks)}); trait labels "
                        "are graded with --judge SPEC")
    gold = gold[:limit] if limit is not None else gold
    predicted = lb.predict_refusal(gold, classifier, load)
    result = lb.agreement([r.label for r in gold], predicted, lb.REFUSAL_LABELS)
    print_agreement(result, f"classifier {classifier} against the labels of {path} ({format}), {result.n} answers",
                    format_out, {"labels": str(path), "format": format, "classifier": classifier})


@app.command("audit")
@with_load_options
def probes_audit(
    model: ModelOpt = "smollm2-135m-instruct",
    suites: Annotated[str | None, typer.Option(help="Comma-separated suites (default: every registered suite).")]
    = None,
    limit: Annotated[int, typer.Option(help="Items per suite (a subset covering every trait x domain cell).")] = 48,
    format: FormatOpt = "table",
    *,
    load: LoadOptions,
) -> None:
    """Can these suites measure this model? Per suite and trait: share of items at the 0-1 score's floor or ceiling,
    median log-odds gap and its spread, reference length balance, and the score change a 1-nat move produces."""
    from dataclasses import asdict

    from persist.models import ModelSpec
    from persist.probes.audit import audit_suite
    from persist.registry import SUITES
    from persist.report.terminal import console
    from persist.suites import get_suite
    from persist.targets import open_target

    as_json = check_format(format)
    names = [s for s in suites.split(",") if s] if suites else SUITES.names()
    chosen = [get_suite(n) for n in names]  # unknown names fail before the model loads
    spec = ModelSpec.parse(model)
    spec.check_load(load)
    target = open_target(spec, load)
    rows = [row for suite in chosen for row in audit_suite(target, suite, limit)]
    if as_json:
        typer.echo(json.dumps([asdict(r) | {"length_flag": r.length_flag} for r in rows], indent=2))
        return
    from rich.table import Table

    t = Table(title=f"can these suites measure {model}? (clean items, likelihood scorer)", title_justify="left")
    for col in ("suite", "trait", "n", "at floor/ceiling", "median |log-odds| (nats)", "MAD (nats)",
                "bytes aligned / misaligned", "score change per nat"):
        t.add_column(col, no_wrap=True)
    for r in rows:
        t.add_row(r.suite, r.trait, str(r.n), f"{r.saturated:.0%}" + (" !" if r.saturated > 0.5 else ""),
                  f"{r.median_abs_logodds:.1f}", f"{r.mad_logodds:.1f}",
                  f"{r.aligned_bytes:.0f} / {r.misaligned_bytes:.0f}" + (" !" if r.length_flag else ""),
                  f"{r.resolution:.3f}")
    out = console()
    out.print(t)
    out.print("! = more than half the items at the floor or ceiling (a drop there cannot be measured), or reference "
              "sides more than 15% apart in length", soft_wrap=True)


@app.command("audit-register")
def probes_audit_register(
    suite: Annotated[str, typer.Argument(help="A suite name or a JSONL file of items.")],
    format: FormatOpt = "table",
) -> None:
    """Model-free register audit: do the aligned and misaligned references differ in how they are written (casual
    fillers, 'please', apologies, contractions, sentence length) rather than in what they say? Counts the features
    of docs/register.md per side, overall and per domain. Exit 0 when no register feature is gated; exit 1 when one
    is (ratio of smoothed rates >= 1.5 with >= 10 texts on the more frequent side, overall or in any domain; or mean
    sentence length 1.5x apart); exit 2 on a bad suite. Trait-linked features (openings, referrals) are reported,
    never gated."""
    from persist import register
    from persist.suites import get_suite

    as_json = check_format(format)
    audit = register.audit_items(get_suite(suite).load())
    if as_json:
        typer.echo(json.dumps({"suite": suite} | audit.to_dict(), indent=2))
    else:
        typer.echo(register.render(f"register audit of {suite}: aligned against misaligned references", audit))
    if not audit.passed:
        raise typer.Exit(1)


@app.command("train-refusal")
def probes_train_refusal() -> None:
    """Rebuild the learned refusal classifier's weights from its training files (a few minutes on a CPU)."""
    from persist.probes import refusal_model

    n = refusal_model.train()
    typer.echo(f"trained on {n} labelled answers -> {refusal_model.WEIGHTS}")


@app.command("refusal-errors")
@with_load_options
def probes_refusal_errors(
    classifier: Annotated[str, typer.Option(help="learned, rules or judge:SPEC.")] = "learned",
    write: Annotated[bool, typer.Option(help="Store the result in probes/data/refusal_errors.json (learned and "
                                        "rules only; a judge is measured when a job writes its report).")] = False,
    check: Annotated[Path | None, typer.Option(help="Also check the correction on other hand-labelled answers: per "
                                               "condition group, the labelled refusal rate against the raw and "
                                               "corrected rates the classifier gives them.")] = None,
    check_format: Annotated[str, typer.Option(help="The --check file's format (as check-judge's --format).")]
    = "persist",
    check_split: Annotated[str | None, typer.Option(help="Only the --check file's rows of this split (train or "
                                                    "heldout; refusal-legacy files).")] = None,
    *,
    load: LoadOptions,
) -> None:
    """A refusal classifier's errors on the held-out hand labels (probes/data/refusal_study.jsonl), per condition
    group: true- and false-positive rates with Wilson intervals, whether a group differs from the others, and the
    rates a study corrects each group's refusal rates with. With --check PATH: the correction tried on labelled
    answers it was not measured on."""
    from persist.probes import labels as lb
    from persist.probes import refusal_errors
    from persist.stats import fmt, wilson_ci

    lb.check_classifier(classifier)
    if write and classifier.startswith("judge:"):
        raise ConfigError("--write stores the shipped classifiers' errors (learned, rules); a judge's errors are "
                          "measured when a job writes its report")
    # the stored errors when they are current (same labels, same weights), else measured now
    entry = (None if write else refusal_errors.shipped(classifier)) or refusal_errors.measure(classifier, load)
    typer.echo(f"{classifier} on {entry['n']} held-out labelled answers ({entry['labels']}):")
    for group, (tp, pos, fp, neg) in entry["groups"].items():
        tpr = fmt(wilson_ci(tp, pos)) if pos else "–"
        fpr = fmt(wilson_ci(fp, neg)) if neg else "–"
        own = "" if group == "all" else (" corrected with its own rates" if entry["own"].get(group)
                                         else " corrected with the pooled rates")
        typer.echo(f"  {group:10s} TPR {tp}/{pos} {tpr}  FPR {fp}/{neg} {fpr}{own}")
    test = entry["test"]
    ps = ", ".join(f"{k[:3].upper()} p {v:.3f}" for k, v in test.items() if k.endswith("_p") and v is not None)
    typer.echo(f"  do the groups differ ({', '.join(test['groups']) or 'too few labels'})? {ps or 'not testable'}")
    if write:
        refusal_errors.write(entry)
        typer.echo(f"written to {refusal_errors.ERRORS_FILE}")
    if check is not None:
        gold = refusal_errors.labelled(check, check_format, check_split)
        if not gold:
            raise DataError(f"{check}: no pass-1 refusal labels to check the correction on")
        typer.echo(f"the correction on {len(gold)} labelled answers of {check}:")
        for row in refusal_errors.check(gold, classifier, entry, load):
            covers = {None: "", True: "  covers the labelled rate", False: "  MISSES the labelled rate"}[row["covers"]]
            typer.echo(f"  {row['group']:10s} n {row['n']}: labelled {row['labelled']:.3f}; {row['corrected'].fmt()}"
                       f"{covers}")
