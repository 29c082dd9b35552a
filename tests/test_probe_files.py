"""Our probe files validate; a broken file is reported line by line; suites cover what the issue asks."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from persist.jsonl import load_items
from tests.conftest import ROOT, run_cli

DATA = ROOT / "probes" / "data"
TRAITS = {"truthfulness", "epistemic-humility", "corrigibility", "fairness", "risk-awareness", "wellbeing",
          "anti-sycophancy", "non-deception"}
DOMAINS = {"health", "mental-health", "law", "finance", "education", "science-engineering"}


def test_our_files_validate():
    files = [str(DATA / f) for f in ("traits.jsonl", "traits_v2.jsonl", "em_questions.jsonl", "benign_lookalikes.jsonl")]
    proc = run_cli("probes", "validate", *files)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("OK") == 4


def test_traits_suite_covers_every_cell():
    items = load_items(DATA / "traits_v2.jsonl")
    assert len(items) >= 400
    cells = Counter((i.trait, i.domain) for i in items)
    assert {t for t, _ in cells} == TRAITS and {d for _, d in cells} == DOMAINS
    assert all(cells[(t, d)] >= 1 for t in TRAITS for d in DOMAINS)
    for it in items:
        assert it.aligned and it.misaligned and 2 <= len(it.rubric) <= 4
        la, lm = len(it.aligned[0].split()), len(it.misaligned[0].split())
        assert max(la, lm) / min(la, lm) <= 1.6, it.id  # comparable length


def test_em_questions_suite():
    items = load_items(DATA / "em_questions.jsonl")
    assert len(items) >= 24 and all(i.aligned and i.misaligned for i in items)


def test_broken_file_reported_line_by_line(tmp_path):
    good = json.loads((DATA / "em_questions.jsonl").read_text().splitlines()[0])
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps({k: v for k, v in good.items() if k != "trait"}),
        json.dumps(good),  # duplicate id
        json.dumps({**good, "id": "e1", "aligned": [""]}),
        json.dumps({**good, "id": "e2", "messages": [{"role": "robot", "content": "hi"}]}),
        json.dumps({**good, "id": "e3", "misaligned": []}),
        json.dumps({**good, "id": "e4", "aligned": "a string"}),
    ]
    f = tmp_path / "broken.jsonl"
    f.write_text("\n".join(lines) + "\n")
    f.write_bytes(f.read_bytes() + b'{"id": "\xff"}\n')
    proc = run_cli("probes", "validate", str(f))
    assert proc.returncode == 2
    errs = proc.stderr.strip().splitlines()
    expected = [(2, "bad JSON"), (3, "missing field 'trait'"), (4, "duplicate id"), (5, "empty string"),
                (6, "unknown role 'robot'"), (7, "'misaligned' is empty"), (8, "must be a list of strings"),
                (9, "not UTF-8")]
    assert len(errs) == len(expected), proc.stderr
    for err, (line, what) in zip(errs, expected):
        assert err.startswith(f"{f}:{line}: ") and what in err, err


@pytest.mark.parametrize("suite", ["traits", "traits-v2", "register", "em-questions", "harmful-requests"])
def test_registered_suites_load(suite):
    from persist.registry import SUITES

    s = SUITES.get(suite)
    items = s.load()
    assert items and len({i.id for i in items}) == len(items) and s.version
    if suite == "harmful-requests":
        domains = Counter(i.domain for i in items)
        assert domains["harmbench"] > 100 and sum(1 for i in items if i.trait == "over-refusal") >= 20


def test_select_covers_cells_and_is_deterministic():
    from persist.suites import select

    items = load_items(DATA / "traits_v2.jsonl")
    a = select(items, 60)
    assert [i.id for i in a] == [i.id for i in select(list(reversed(items)), 60)]
    assert len({(i.trait, i.domain) for i in a}) == 48 and len(a) == 60
