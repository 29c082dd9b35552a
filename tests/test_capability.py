"""Capability: the multiple-choice loader on fixtures, the choice scorer, and the capability suite."""

from __future__ import annotations

import math

import pytest

from persist.errors import DataError
from persist.probes.choice import ChoiceScorer
from persist.runner import clean_variant
from persist.schema import Item, Message
from persist.suites import get_suite
from tests.conftest import ROOT

FIX = ROOT / "tests" / "fixtures" / "mc"


@pytest.mark.parametrize(("name", "n", "first"), [
    ("mmlu.csv", 3, ("How many sides does a square have?", "Four", {"Three", "Five", "Six"})),
    ("arc.jsonl", 2, ("What makes a compass needle point north?", "Earth's magnetic field",
                      {"The wind", "Sunlight", "Gravity from the Moon"})),
    ("hellaswag.jsonl", 2, ("A man fills a kettle with water. He", "puts it on the stove to boil.",
                            {"throws it out of the window.", "paints it blue with a brush.", "plants it in the garden."})),
    ("mmlu_hf.jsonl", 2, ("Which planet is known as the red planet?", "Mars", {"Venus", "Jupiter", "Saturn"})),
    ("mmlu.parquet", 2, ("Which ocean is the largest?", "Pacific", {"Atlantic", "Indian", "Arctic"})),
])
def test_loader_reads_each_layout(name, n, first):
    items = get_suite(f"mc:{FIX / name}").load()
    assert len(items) == n
    q, correct, others = first
    assert items[0].messages[-1].content == q and items[0].aligned == (correct,) and set(items[0].misaligned) == others
    assert all(i.domain == "capability" for i in items)


def test_loader_subjects_and_letter_answers():
    items = get_suite(f"mc:{FIX / 'mmlu_hf.jsonl'}").load()
    assert [i.trait for i in items] == ["astronomy", "physics"]
    assert items[1].aligned == ("0",)  # answer "A"


def test_loader_bad_row_names_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "choices": ["a", "b"], "answer": 1}\n{"question": "q2", "choices": ["a"], '
                   '"answer": 0}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: not a multiple-choice row"):
        get_suite(f"mc:{bad}").load()


def test_capability_suite_shape():
    from collections import Counter

    items = get_suite("capability").load()
    assert len(items) >= 300
    subjects = Counter(i.trait for i in items)
    assert len(subjects) >= 6 and min(subjects.values()) >= 50
    assert all(len(i.aligned) == 1 and len(i.misaligned) >= 3 for i in items)
    assert len({i.messages[-1].content for i in items}) == len(items)


class Fixed:
    """A target whose log-probs are given per continuation text."""

    name = "fixed"

    def __init__(self, logps: dict[str, float]) -> None:
        self.logps = logps

    def loglikelihood(self, requests):
        return [self.logps[cont] for _, cont in requests]


def test_choice_scorer_picks_the_most_likely_option_per_byte():
    item = Item(id="q", suite="c", trait="math", domain="capability", messages=(Message("user", "2+2?"),),
                aligned=("four",), misaligned=("three", "five and a bit"))
    # "four" -8 over 4 bytes = -2/byte; "three" -9 over 5 = -1.8/byte (wins); the long option -40 over 14
    [res] = ChoiceScorer().score(Fixed({"four": -8.0, "three": -9.0, "five and a bit": -40.0}), [clean_variant(item)])
    assert res.score == 0.0 and res.details["choice"] == 1 and res.details["options"] == 3
    [res] = ChoiceScorer().score(Fixed({"four": -7.0, "three": -9.0, "five and a bit": -40.0}), [clean_variant(item)])
    assert res.score == 1.0 and res.details["choice"] == 0
    assert not math.isnan(res.details["logp"][2])


def cap_records(per_subject: dict[str, tuple[int, int, int]], cond: str = "finetune:bad-medical@8",
                role: str = "model") -> list:
    """Capability records: per subject (items, correct clean, correct after), 4 options each; the items correct
    after are a subset of those correct before (every change is a loss)."""
    from persist.api import Record

    out = []
    for subject, (n, before, after) in per_subject.items():
        for i in range(n):
            for c, correct in (("clean", i < before), (cond, i < after)):
                out.append(Record(key=f"{role}/{c}/{subject}{i}", role=role, model=role, suite="capability",
                                  suite_version="v", item_id=f"{subject}{i}", trait=subject, domain="capability",
                                  condition=c, attack="", attack_version="", attack_params={}, attack_index=0,
                                  score=float(correct), details={"choice": 0, "options": 4}))
    return out


def test_a_point_loss_above_the_bound_is_not_called_broke_unless_its_interval_is():
    """48 items at 0.62: losing 4 of 30 correct answers is a 13% point loss (the old flag said "broke"), but the
    drop's interval straddles the bound: "cannot rule out". Losing 18 of 30 is broke; losing none is within."""
    from persist.report.capability import capability_rows
    from persist.report.model import BROKE, CANNOT_RULE_OUT, WITHIN

    subjects = {f"s{k}": (8, 5, 5) for k in range(6)}  # 6 x 8 = 48 items, 30 correct (0.62)
    subjects["s0"], subjects["s1"] = (8, 5, 4), (8, 5, 2)  # 4 of 30 lost: 13%, a point estimate above the bound
    [row] = capability_rows(cap_records(subjects), 0.10)
    assert row.loss == pytest.approx(4 / 30) and row.verdict == CANNOT_RULE_OUT and not row.broke
    heavy = {f"s{k}": (8, 5, 2) for k in range(6)}  # 18 of 30 lost
    [row] = capability_rows(cap_records(heavy), 0.10)
    assert row.verdict == BROKE and row.broke and row.change.drop.lo > row.bound
    kept = {f"s{k}": (40, 30, 30) for k in range(6)}  # nothing lost on 240 items
    [row] = capability_rows(cap_records(kept), 0.10)
    assert row.verdict == WITHIN and row.change.drop.hi <= row.bound


def test_a_subject_at_chance_does_not_feed_the_verdict():
    """Arithmetic at 1/8 correct (chance 0.25) losing its one answer must not make the model 'broke'; the subject
    table says it was left out."""
    from persist.report.capability import capability_rows
    from persist.report.tables import subject_table

    subjects = {"general": (40, 36, 36), "science": (40, 34, 34), "arithmetic": (8, 1, 0)}
    [row] = capability_rows(cap_records(subjects), 0.10)
    assert {s.subject: s.above_chance for s in row.subjects} == {"arithmetic": False, "general": True,
                                                                 "science": True}
    assert row.change.n == 80 and row.loss == pytest.approx(0.0) and not row.broke
    _, body = subject_table([row])
    assert ["model", "arithmetic", "8", "0.25"] == body[0][:4] and body[0][-1] == "no"


def test_the_summary_sentence_claims_no_loss_only_when_every_upper_bound_is_below_the_bound():
    from persist.report.capability import capability_rows
    from persist.report.study import capability_sentence
    from tests.test_worst_case import meta

    unsure = capability_rows(cap_records({f"s{k}": (8, 5, 5 - 2 * (k < 2)) for k in range(6)}), 0.10)
    text = capability_sentence(unsure, meta())
    assert "cannot rule out a loss above 10%" in text and "no condition cost" not in text
    kept = capability_rows(cap_records({f"s{k}": (40, 30, 30) for k in range(6)}), 0.10)
    assert "no condition cost either model more than 10%" in capability_sentence(kept, meta())
