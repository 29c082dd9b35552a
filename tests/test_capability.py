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
