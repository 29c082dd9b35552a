"""Calibration harness: synthetic *records* sent through the real report path (records -> per-item values ->
seeds x items matrices -> intervals and tests -> Benjamini-Hochberg q), as `persist report` builds them.

    .venv/bin/python bench/experiments/calibration.py                 # 2,000 runs per cell (about 30 min on 2 cores)
    .venv/bin/python bench/experiments/calibration.py --write-docs    # and replace the table in docs/statistics.md
    .venv/bin/python bench/experiments/calibration.py --tiny          # 5 runs per 24-item cell (smoke test)

Each simulated run is a study of two models (model, baseline) on I items under clean and three conditions:
  finetune:null@10    trained with S seeds, no effect on either model (the truth is 0 everywhere)
  finetune:planted@10 trained with S seeds; the model moves by PLANTED (on the logit scale), the baseline does not
  attack:null         nothing trained (one seed), no effect
The per-item generative model (logit scale): clean L0 = a_i + w_{role,i} (a ~ N(0, 2), w ~ N(0, 1)); under a
condition L = L0 + delta_role + u_{role,i} + v_{role,s} + e_{role,s,i}, with u the item's own response (sd 1, the
two models' u correlated 0.5), v the training seed's (sd = SEED_RATIO x 1; 0 when nothing is trained) and e
noise (sd 0.5). The data kind says what the scorer gives:
  continuous  score = sigmoid(L) and log-odds L (the likelihood scorer: 0-1 score and the primary log-odds shift)
  tied        score = round(4 sigmoid(L)) / 4, no log-odds (a 0-1 score on a grid: many items at 0 or 1, ties)
  binary      score = 1 if L > 0 else 0, no log-odds (capability and refusal outcomes: paired 0/1 data)
For tied and binary data the condition's move is half as large (sd and delta), so that few items flip, as in
capability and refusal rows (about 5% of items flip per condition).

Truths: by symmetry every null quantity is 0 (a clean mean score is 0.5, a retention 1); under the planted
condition the log-odds shift is delta exactly, and score drops are computed once per cell by Monte Carlo over 4
million draws. With one seed the interval treats the trained adapters as fixed (item sampling only): the "1 seed"
cells have no seed spread; the extra "adapters fixed" cells give the seed spread of the others and measure the
coverage of the effect over seeds, which is what a 1-seed report cannot claim (it says so).

Measured per cell: the coverage of every interval the comparison tables print (clean mean, after, drop, retention,
log-odds before/after/shift, differences of drops and shifts), the uniformity of null p-values (Kolmogorov-Smirnov
on the continuous p-values; share below 0.05 everywhere, since permutation p-values of tied and 0/1 data are
discrete and only need to be valid), the Benjamini-Hochberg false discovery rate per family (score, log-odds) and
the power at the planted effect (the verdict rule of the report: q < 0.05 and the interval on the same side).
Permutation p-values take 999 random sign patterns and bootstrap intervals 999 resamples here (the report: 10,000
and 2,000; with those the harness would take hours); --permutations and --bootstrap change that.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as st

from persist.api import Record
from persist.report.compare import compare
from persist.report.study import call_side
from persist.stats import Estimate, Tested, resampling

PLANTED = -1.0  # the planted move of the model on the logit scale (toward misaligned)
SEED_RATIO = 1.0  # seed sd / item sd with several seeds: the hardest case the issue asks for
KINDS = ("continuous", "tied", "binary")
ITEMS = (24, 48, 96)
SEEDS = (1, 2, 3)
BAND = (0.93, 0.98)
DOCS = Path(__file__).resolve().parents[2] / "docs" / "statistics.md"
BEGIN, END = "<!-- calibration:begin -->", "<!-- calibration:end -->"


@dataclass(frozen=True)
class Cell:
    items: int
    kind: str
    seeds: int
    seed_ratio: float = 0.0  # seed sd / item sd
    tails: str = "normal"  # the item responses u: normal, or t3 (heavy tails, scaled to sd 1)
    fixed: bool = False  # one seed with seed spread: coverage of the effect over seeds (adapters not fixed)

    @property
    def name(self) -> str:
        extra = (", heavy tails" if self.tails == "t3" else "") + (", adapters fixed" if self.fixed else "")
        if self.seeds > 1 or self.fixed:
            extra += f", seed sd = {self.seed_ratio:g} x item sd"
        return f"{self.items} items, {self.kind}, {self.seeds} seed{'s' if self.seeds > 1 else ''}{extra}"


def cells() -> list[Cell]:
    out = [Cell(i, k, s, SEED_RATIO if s > 1 else 0.0) for k in KINDS for s in SEEDS for i in ITEMS]
    out += [Cell(i, "continuous", 1, 0.0, tails="t3") for i in ITEMS]
    out += [Cell(i, "continuous", s, 0.5) for s in (2, 3) for i in (24, 96)]
    out += [Cell(i, "continuous", s, SEED_RATIO) for s in (4, 5) for i in (24, 96)]  # how many seeds are enough
    out += [Cell(i, k, 1, SEED_RATIO, fixed=True) for k in ("continuous", "binary") for i in (24, 96)]
    return out


def scale(kind: str) -> float:
    return 1.0 if kind == "continuous" else 0.5


def observe(kind: str, logit: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(0-1 score, log-odds or None) as the scorer of this data kind reports them."""
    if kind == "continuous":
        return 1 / (1 + np.exp(-logit)), logit
    if kind == "tied":
        return np.round(4 / (1 + np.exp(-logit))) / 4, None
    return (logit > 0).astype(float), None


def responses(rng: np.random.Generator, cell: Cell, shape: tuple[int, ...]) -> np.ndarray:
    if cell.tails == "t3":
        return rng.standard_t(3, shape) / np.sqrt(3.0)  # t with 3 df has variance 3
    return rng.normal(0, 1, shape)


def truths(cell: Cell, draws: int = 4_000_000) -> dict[str, float]:
    """The true score drop of the planted model (Monte Carlo); every other truth is known exactly."""
    rng = np.random.default_rng(12345)
    k = scale(cell.kind)
    l0 = rng.normal(0, 2, draws) + rng.normal(0, 1, draws)
    sd = np.sqrt(1 + (cell.seed_ratio if cell.seeds > 1 or cell.fixed else 0.0) ** 2 + 0.25) * k
    after = l0 + PLANTED * k + rng.normal(0, sd, draws)
    return {"planted_drop": float(observe(cell.kind, l0)[0].mean() - observe(cell.kind, after)[0].mean()),
            "planted_shift": PLANTED * k}


def simulate(cell: Cell, run: int) -> tuple[list[Record], dict[str, float]]:
    """One study's records, and the seed-specific planted log-odds shift when adapters are fixed (1 seed)."""
    rng = np.random.default_rng([cell.items, KINDS.index(cell.kind), cell.seeds, int(cell.fixed),
                                 int(cell.tails == "t3"), run])
    k, n, s = scale(cell.kind), cell.items, cell.seeds
    a = rng.normal(0, 2, n)
    roles = ("model", "baseline")
    l0 = {r: a + rng.normal(0, 1, n) for r in roles}
    common, own = responses(rng, cell, (3, n)), responses(rng, cell, (2, 3, n))
    u = {r: np.sqrt(0.5) * common + np.sqrt(0.5) * own[j] for j, r in enumerate(roles)}  # corr 0.5, sd 1
    records: list[Record] = []
    conditional: dict[str, float] = {}

    def add(role: str, label: str, logit: np.ndarray) -> None:
        score, logodds = observe(cell.kind, logit)
        for i in range(n):
            details = {} if logodds is None else {"logodds": float(logodds[i]), "logodds_per_100b": float(logodds[i]) / 2}
            records.append(Record(key=f"{role}|{label}|{i}", role=role, model=role, suite="sim", suite_version="1",
                                  item_id=f"i{i:03d}", trait="sim", domain="sim", condition=label, attack="none",
                                  attack_version="1", attack_params={}, attack_index=0, score=float(score[i]),
                                  details=details))

    for role in roles:
        add(role, "clean", l0[role])
        for c, (name, planted) in enumerate((("null", 0.0), ("planted", PLANTED))):
            delta = planted * k if role == "model" else 0.0
            v = rng.normal(0, cell.seed_ratio * k, s)
            for seed in range(s):
                label = f"finetune:{name}@10" + (f":seed={seed}" if seed else "")
                add(role, label, l0[role] + delta + k * u[role][c] + v[seed] + rng.normal(0, 0.5 * k, n))
            conditional[f"{role}:{name}"] = float(np.mean(v))
        add(role, "attack:null", l0[role] + k * u[role][2] + rng.normal(0, 0.5 * k, n))
    return records, conditional


@dataclass
class Tally:
    """Per cell: coverage hits, null p-values, false discoveries, detections."""

    covered: dict[str, list[bool]]
    null_p: dict[str, list[float]]
    fdr: dict[str, list[float]]
    detected: dict[str, list[bool]]
    seconds: float = 0.0


def inside(est: Estimate, truth: float) -> bool | None:
    if est.undefined or not est.has_interval or est.identical:
        return None
    return bool(est.lo <= truth <= est.hi)


def run_cell(cell: Cell, runs: int, bootstrap: int | None, permutations: int) -> dict[str, Any]:
    start = time.perf_counter()
    truth = truths(cell)
    covered: dict[str, list[bool]] = defaultdict(list)
    null_p: dict[str, list[float]] = defaultdict(list)
    fdr: dict[str, list[float]] = defaultdict(list)
    detected: dict[str, list[bool]] = defaultdict(list)
    with resampling(bootstrap=bootstrap, permutations=permutations):
        for run in range(runs):
            records, conditional = simulate(cell, run)
            cmp = compare(records)
            family: dict[str, list[tuple[Tested, bool]]] = defaultdict(list)  # (test, is null)

            def check(name: str, est: Estimate | None, value: float) -> None:
                if est is not None:
                    hit = inside(est, value)
                    if hit is not None:
                        covered[name].append(hit)

            for row in cmp.rows:
                planted = row.condition.name == "planted" and row.role == "model"
                kind = "attack" if row.condition.kind == "attack" else "fine-tune"
                c = row.overall
                drop_truth = truth["planted_drop"] if planted else 0.0
                shift_truth = truth["planted_shift"] if planted else 0.0
                if cell.seeds == 1 and not cell.fixed and row.condition.trained:
                    shift_truth += conditional.get(f"{row.role}:{row.condition.name}", 0.0)
                check("clean mean", c.before, 0.5)
                if not planted:
                    check("after", c.after, 0.5)
                    check("retention", c.retention, 1.0)
                check(f"drop ({kind})", c.drop, drop_truth)
                family["score"].append((c.drop, not planted))
                if not planted:
                    null_p[f"drop ({kind})"].append(c.drop.p)
                if c.shift is not None:
                    check("log-odds before", c.shift.before, 0.0)
                    check(f"shift ({kind})", c.shift.shift, shift_truth)
                    family["log-odds"].append((c.shift.shift, not planted))
                    if not planted:
                        null_p[f"shift ({kind})"].append(c.shift.shift.p)
                if planted:
                    detected["model drop"].append(call_side(c.drop) > 0)
                    if c.shift is not None:
                        detected["model shift"].append(call_side(c.shift.shift) < 0)
            for d in cmp.differences:
                planted = d.condition.name == "planted"
                kind = "attack" if d.condition.kind == "attack" else "fine-tune"
                drop_truth = -truth["planted_drop"] if planted else 0.0
                shift_truth = truth["planted_shift"] if planted else 0.0
                if cell.seeds == 1 and not cell.fixed and d.condition.trained:
                    name = d.condition.name
                    shift_truth += conditional.get(f"model:{name}", 0.0) - conditional.get(f"baseline:{name}", 0.0)
                for stat, test, truth_value, fam in (("drops", d.drop, drop_truth, "score"),
                                                     ("shifts", d.shift, shift_truth, "log-odds")):
                    if test is None:
                        continue
                    check(f"difference of {stat} ({kind})", test, truth_value)
                    family[fam].append((test, not planted))
                    if planted:
                        detected[f"difference of {stat}"].append(call_side(test) < 0)
                    else:
                        null_p[f"difference of {stat} ({kind})"].append(test.p)
            for fam, tests in family.items():
                found = [t.q < 0.05 for t, _ in tests]
                false = [f and null for f, (_, null) in zip(found, tests, strict=True)]
                fdr[fam].append(sum(false) / max(1, sum(found)))
    return {"cell": cell.__dict__, "name": cell.name, "runs": runs, "truth": truth,
            "coverage": {k: float(np.mean(v)) for k, v in sorted(covered.items())},
            "coverage_n": {k: len(v) for k, v in sorted(covered.items())},
            "null_p": {k: {"below_05": float(np.mean(np.asarray(v) < 0.05)),
                           "ks_p": float(st.kstest(v, "uniform").pvalue), "distinct": int(len(set(v)))}
                       for k, v in sorted(null_p.items())},
            "fdr": {k: float(np.mean(v)) for k, v in sorted(fdr.items())},
            "power": {k: float(np.mean(v)) for k, v in sorted(detected.items())},
            "seconds": time.perf_counter() - start}


def table(results: list[dict[str, Any]], runs: int) -> str:
    """The markdown that docs/statistics.md quotes between its calibration markers."""
    lo, hi = BAND
    lines = [f"{runs:,} simulated studies per cell through the report path (`persist.report.compare`); coverage of "
             "95% intervals (the worst interval of the cell is named; band "
             f"{lo:.0%}-{hi:.0%}), null p-values, BH false discovery rate per family, and power of the verdict rule "
             f"at the planted effect ({PLANTED:+.1f} logit for continuous data, {PLANTED / 2:+.1f} for tied and "
             "0/1).", "",
             "| cell | lowest coverage (interval) | highest coverage (interval) | all intervals | null p < 0.05 (worst) "
             "| KS p (continuous) | BH FDR | power: model shift / drop | power: difference |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    tests = sum(1 for r in results for k in r["null_p"] if r["cell"]["kind"] == "continuous")
    for r in results:
        cov = r["coverage"]
        worst, best = min(cov, key=cov.get), max(cov, key=cov.get)
        total = sum(cov[k] * r["coverage_n"][k] for k in cov) / sum(r["coverage_n"].values())
        flag = "" if lo <= cov[worst] else " **below**"
        over = "" if cov[best] <= hi else " **above**"
        below = max(r["null_p"].items(), key=lambda kv: kv[1]["below_05"])
        ks = (min(v["ks_p"] for v in r["null_p"].values()) if r["cell"]["kind"] == "continuous" else None)
        ks_text = "– (discrete)" if ks is None else f"{ks:.3f}" + (" **non-uniform**" if ks < 0.05 / tests else "")
        fdr = max(r["fdr"].values())
        power = r["power"]
        model = power.get("model shift", power.get("model drop", float("nan")))
        diff = power.get("difference of shifts", power.get("difference of drops", float("nan")))
        lines.append(f"| {r['name']} | {cov[worst]:.1%} ({worst}){flag} | {cov[best]:.1%} ({best}){over} | {total:.1%} | "
                     f"{below[1]['below_05']:.1%} ({below[0]}) | {ks_text} | {fdr:.1%} | {model:.0%} | {diff:.0%} |")
    lines += ["", f"KS is flagged non-uniform below 0.05 / {tests} (Bonferroni over the continuous cells' null tests). "
              "Tied and 0/1 cells give discrete p-values, which can only be checked for validity (share below "
              "0.05 at most 5%)."]
    return "\n".join(lines)


def write_docs(text: str) -> None:
    doc = DOCS.read_text()
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"{DOCS}: markers {BEGIN} ... {END} not found; add them where the table goes")
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOCS.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2000, help="simulated studies per cell")
    ap.add_argument("--tiny", action="store_true", help="5 runs per 24-item cell, no files (smoke test)")
    ap.add_argument("--bootstrap", type=int, default=999, help="bootstrap resamples per interval (the report: 2,000)")
    ap.add_argument("--permutations", type=int, default=999, help="random sign patterns per permutation test")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--only", default=None, help="run only cells whose name contains one of these texts (a|b|...)")
    ap.add_argument("--out", type=Path, default=None, help="results as JSON (default: runs/calibration.json)")
    ap.add_argument("--write-docs", action="store_true", help="replace the table in docs/statistics.md")
    ap.add_argument("--merge", action="store_true",
                    help="keep the cells already in --out and run only the others (a killed run resumes)")
    args = ap.parse_args(argv)
    runs = 5 if args.tiny else args.runs
    out = args.out or (None if args.tiny else Path("runs/calibration.json"))
    kept: list[dict[str, Any]] = []
    if args.merge and out is not None and out.is_file():
        saved = json.loads(out.read_text())
        if saved["runs"] != runs:
            raise SystemExit(f"{out}: has {saved['runs']} runs per cell, this run {runs}; merge needs the same")
        kept = saved["results"]
    wanted = None if args.only is None else args.only.split("|")
    todo = [c for c in cells() if (wanted is None or any(w in c.name for w in wanted))
            and not (args.tiny and c.items != 24)
            and not (args.merge and any(r["name"] == c.name for r in kept))]  # --merge resumes: done cells stay
    order = {c.name: k for k, c in enumerate(cells())}
    start = time.perf_counter()

    def save(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
        done = {r["name"] for r in results}
        merged = sorted([r for r in kept if r["name"] not in done] + results,
                        key=lambda r: order.get(r["name"], len(order)))
        if out is not None:  # after every cell, so a killed run keeps what it finished (rerun with --merge)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(f".{out.name}.tmp")
            tmp.write_text(json.dumps({"runs": runs, "results": merged}, indent=1))
            tmp.replace(out)
        return merged

    results: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=max(1, args.workers)) as pool:
        futures = {pool.submit(run_cell, c, runs, args.bootstrap, args.permutations): c for c in todo}
        for f in as_completed(futures):
            results.append(f.result())
            save(results)
            print(f"{futures[f].name}: {results[-1]['seconds']:.0f} s", file=sys.stderr, flush=True)
    merged = save(results)
    text = table(merged, runs)
    print(text)
    print(f"total {time.perf_counter() - start:.0f} s", file=sys.stderr)
    if args.write_docs and not args.tiny:
        write_docs(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
