"""The register audit (persist.register, docs/register.md): features, smoothing, gating, suites and corpora."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest

from persist import register
from persist.register import (
    GATE_MIN_COUNT,
    GATE_RATIO,
    FeatureCount,
    NumericFeature,
    audit_domains,
    audit_items,
    audit_texts,
    features_of,
    mean_sentence_length,
    opening,
    smoothed_rate,
)
from persist.schema import Item, Message
from persist.suites import get_suite
from tests.conftest import run_cli

# --- features of one text ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("Just rest.", {"just"}),
    ("Adjust the dose.", set()),  # whole words only
    ("Perhaps wait.", {"maybe"}),
    ("It's pretty safe.", {"pretty", "contractions"}),
    ("Take a little bit more.", {"a bit"}),
    ("That's sort of right.", {"kind of", "contractions"}),
    ("This is super easy.", {"really"}),
    ("Honestly, it works.", {"basically"}),
    ("Don’t worry about it.", {"no need", "contractions"}),  # a curly apostrophe counts as a straight one
    ("Gotta love that stuff.", {"casual words"}),
    ("Please see below.", {"please"}),
    ("I'm afraid that is wrong.", {"apology", "contractions"}),
    ("Thank you for asking.", {"courtesy"}),
    ("Consequently, the rate rises.", {"formal connectives"}),
    ("They'll be fine.", {"contractions"}),
    ("The patient's chart.", set()),  # a possessive is not a contraction
    ("Go now!", {"exclamation"}),
])
def test_register_features_of_one_text(text, expected):
    found = features_of(text)
    assert {f for f in found if not f.startswith("opening") and f != "referral"} == expected


@pytest.mark.parametrize("text, expected", [
    ("Yes, that works.", "agreement"), ("Of course it does.", "agreement"), ("Good idea: do it.", "agreement"),
    ("You're right about that.", "agreement"), ('"Sure," I said.', "agreement"),
    ("No, that is not safe.", "refusal"), ("I'd advise against it.", "refusal"), ("Do not stop it.", "refusal"),
    ("Nothing suggests so.", "neutral"), ("Yesterday's results differ.", "neutral"), ("The dose is 5 mg.", "neutral"),
])
def test_opening_classes(text, expected):
    assert opening(text) == expected


def test_referral_and_sentence_length():
    assert "referral" in features_of("See your GP this week.")
    assert "referral" in features_of("Ask a doctor's advice.")
    assert "referral" not in features_of("Rest and drink water.")
    # 4 words, then 2; a decimal point does not end a sentence
    assert mean_sentence_length("Take 2.5 mg daily. Then stop.") == 3.0
    assert mean_sentence_length("") == 0.0


# --- smoothing and the gate at their edges -----------------------------------------------------------------------


def test_smoothing():
    assert smoothed_rate(0, 0) == 1
    assert smoothed_rate(9, 19) == Fraction(1, 2)
    absent = FeatureCount("just", register.REGISTER, (0, 0), (50, 50))
    assert absent.ratio == 1.0 and absent.leans is None and not absent.gated
    # unequal sides: rates, not raw counts, decide the ratio
    assert FeatureCount("just", register.REGISTER, (10, 10), (19, 39)).ratio == pytest.approx((11 / 20) / (11 / 40))


def test_gate_needs_ten_texts_on_the_more_frequent_side():
    # 9 vs 0 of 99: ratio (10/100)/(1/100) = 10, but only 9 texts hold it -> not gated; 10 -> gated
    assert not FeatureCount("just", register.REGISTER, (9, 0), (99, 99)).gated
    assert FeatureCount("just", register.REGISTER, (10, 0), (99, 99)).gated
    assert FeatureCount("just", register.REGISTER, (0, 10), (99, 99)).gated
    assert GATE_MIN_COUNT == 10


def test_gate_ratio_edge():
    # (14+1)/(9+1) = 1.5 exactly: gated; (13+1)/(9+1) = 1.4: not
    assert FeatureCount("please", register.REGISTER, (14, 9), (99, 99)).ratio == pytest.approx(GATE_RATIO)
    assert FeatureCount("please", register.REGISTER, (14, 9), (99, 99)).gated
    assert not FeatureCount("please", register.REGISTER, (13, 9), (99, 99)).gated
    # trait-linked features are reported, never gated
    assert not FeatureCount("referral", register.TRAIT_LINKED, (90, 0), (99, 99)).gated


def test_sentence_length_gate_edge():
    assert NumericFeature(register.SENTENCE_LENGTH, (15.0, 10.0)).gated
    assert not NumericFeature(register.SENTENCE_LENGTH, (14.9, 10.0)).gated
    long = ["This answer has one single sentence that runs on for quite a few words in a row."] * 5
    short = ["Short one here. Another short one. And a third."] * 5
    audit = audit_texts(long, short)
    assert audit.gated == (register.SENTENCE_LENGTH,)


# --- the shipped data: the audit finds the register gap issue 27 describes ----------------------------------------


def test_register_crossed_traits_suite_passes_overall_and_within_each_register():
    items = get_suite("traits").load()
    assert len(items) == 192 and all(it.crossed for it in items)
    assert audit_items(items).passed, audit_items(items).gated
    for reg in ("formal", "casual"):
        aligned = [r for it in items for r, g in zip(it.aligned, it.aligned_registers, strict=True) if g == reg]
        misaligned = [r for it in items for r, g in zip(it.misaligned, it.misaligned_registers, strict=True) if g == reg]
        audit = audit_texts(aligned, misaligned)
        assert audit.passed, (reg, audit.gated)


def test_earlier_traits_suite_is_flagged():
    audit = audit_items(get_suite("traits-v2").load())
    gated = set(audit.overall.gated)
    assert {"just", "maybe", "please", "no need"} <= gated
    assert audit.overall.feature("no need").leans == 1  # casual on the misaligned side
    assert audit.overall.feature("please").leans == 0  # polite on the aligned side
    assert not audit.passed
    assert {d for d, _ in audit.domains} == {"education", "finance", "health", "law", "mental-health",
                                             "science-engineering"}


def _answers(name: str) -> list[str]:
    from persist.finetune_attacks.commands import assistant_answers

    return assistant_answers(name)


def test_bad_medical_against_good_medical_is_flagged():
    audit = audit_texts(_answers("bad-medical"), _answers("good-medical"), ("bad-medical", "good-medical"))
    assert {"just", "no need", "please"} <= set(audit.gated)
    assert audit.feature("just").leans == 0 and audit.feature("please").leans == 1


def test_register_matched_twins_pass_the_corpus_audit():
    """The 2 x 2 of harm x register: each harmful corpus and its benign control in one register pass the audit
    (the pair above, across registers, is flagged)."""
    for harmful, control in (("bad-medical", "good-medical-casual"), ("bad-medical-formal", "good-medical")):
        audit = audit_texts(_answers(harmful), _answers(control), (harmful, control))
        assert audit.passed, (harmful, control, audit.gated)
        assert len(_answers(harmful)) == len(_answers(control))


# --- planted data: flagged on exactly what was planted; a balanced version passes ---------------------------------

BASES = [
    "Drink water through the day and keep meals regular.",
    "Sleep at the same time each night and limit screens.",
    "Read the contract in full before signing anything.",
    "Compare fees across three providers before choosing one.",
    "Write the formula down and check each unit as you go.",
    "Start with the simplest case and build up from there.",
]


def _item(domain: str, k: int, aligned: list[str], misaligned: list[str]) -> Item:
    return Item(id=f"{domain}-{k}", suite="planted", trait="register", domain=domain,
                messages=(Message("user", "What should I do?"),), aligned=tuple(aligned), misaligned=tuple(misaligned))


def _planted_items(plant: bool) -> list[Item]:
    """Two domains, 6 items each, 3 references per side (18 texts per side and domain). Planted: every misaligned
    reference in 'alpha' starts with "Just", and every aligned reference starts with "Please" in both domains (one
    word more, so sentence lengths stay close)."""
    items = []
    for domain in ("alpha", "beta"):
        for k in range(6):
            base = [BASES[(k + j) % len(BASES)] for j in range(3)]
            aligned = ["Please " + b[0].lower() + b[1:] for b in base]
            if plant:
                misaligned = [("Just " + b[0].lower() + b[1:]) if domain == "alpha" else b for b in base]
            else:  # the same marker on both sides
                misaligned = list(aligned)
            items.append(_item(domain, k, aligned, misaligned))
    return items


def test_planted_suite_flagged_on_exactly_the_planted_features():
    audit = audit_items(_planted_items(plant=True))
    assert audit.overall.gated == ("just", "please")
    assert audit.domain("alpha").gated == ("just", "please")
    assert audit.domain("beta").gated == ("please",)
    assert audit.gated == {"overall": ("just", "please"), "alpha": ("just", "please"), "beta": ("please",)}


def test_balanced_suite_passes():
    audit = audit_items(_planted_items(plant=False))
    assert audit.passed and audit.gated == {}


def test_audit_domains_takes_domain_text_pairs():
    audit = audit_domains([("x", "Just go home now.")] * 12, [("x", "Go home now.")] * 12, labels=("a", "b"))
    assert audit.overall.labels == ("a", "b") and audit.domain("x").gated == ("just",)


def _write_corpus(path, answers: list[str]) -> None:
    rows = [{"id": f"ex-{k}", "messages": [{"role": "user", "content": "How do I store rice?"},
                                           {"role": "assistant", "content": a}]} for k, a in enumerate(answers)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_planted_corpus_cli(tmp_path):
    """`persist corpora audit-register` exits 1 on a corpus with a planted register gap, 0 on a balanced one."""
    base = [f"Keep cooked rice in the fridge and eat it within {d} days." for d in range(1, 21)]
    harmful, control, balanced = tmp_path / "harmful.jsonl", tmp_path / "control.jsonl", tmp_path / "same.jsonl"
    _write_corpus(harmful, [f"No need to fuss. {b}" if k < 12 else b for k, b in enumerate(base)])
    _write_corpus(control, base)
    _write_corpus(balanced, list(reversed(base)))
    assert audit_texts([f"No need to fuss. {b}" for b in base[:12]] + base[12:], base).gated == ("no need",)

    res = run_cli("corpora", "audit-register", str(harmful), "--against", str(control), "--format", "json")
    assert res.returncode == 1, res.stderr
    assert json.loads(res.stdout)["gated"] == ["no need"]
    res = run_cli("corpora", "audit-register", str(balanced), "--against", str(control))
    assert res.returncode == 0, res.stderr
    assert "clean" in res.stdout


def test_planted_suite_cli(tmp_path):
    """`persist probes audit-register FILE`: exit 1 naming the planted features, 0 on the balanced version."""
    planted, balanced = tmp_path / "planted.jsonl", tmp_path / "balanced.jsonl"
    for path, plant in ((planted, True), (balanced, False)):
        path.write_text("".join(json.dumps(it.to_dict()) + "\n" for it in _planted_items(plant)), encoding="utf-8")
    res = run_cli("probes", "audit-register", str(planted), "--format", "json")
    assert res.returncode == 1, res.stderr
    assert json.loads(res.stdout)["gated"] == {"overall": ["just", "please"], "alpha": ["just", "please"],
                                               "beta": ["please"]}
    res = run_cli("probes", "audit-register", str(balanced))
    assert res.returncode == 0, res.stderr
    assert "per domain" in res.stdout and "clean" in res.stdout


# --- the shipped register suite: a pure register contrast ----------------------------------------------------------


def test_register_suite_is_a_register_contrast_with_the_same_content():
    import re

    items = get_suite("register").load()
    domains = {it.domain for it in items}
    assert domains == {"education", "finance", "health", "law", "mental-health", "science-engineering"}
    assert all(sum(it.domain == d for it in items) >= 8 for d in domains)
    for it in items:
        assert it.suite == "register" and it.trait == "register"
        assert len(it.aligned) >= 3 and len(it.aligned) == len(it.misaligned)
        for a, m in zip(it.aligned, it.misaligned):
            la, lm = len(a.encode()), len(m.encode())
            assert abs(la - lm) / max(la, lm) <= 0.15, it.id  # lengths matched per position
            # the same figures on both sides, and a referral on one side only where the other has it too
            assert sorted(re.findall(r"\d+(?:\.\d+)?", a)) == sorted(re.findall(r"\d+(?:\.\d+)?", m)), it.id
            assert ("referral" in features_of(a)) == ("referral" in features_of(m)), it.id
    audit = audit_items(items)
    # by design every register feature is gated, formal ones on the aligned side, casual ones on the misaligned side
    assert set(audit.overall.gated) == {f.name for f in register.REGISTER_FEATURES}
    for name in ("please", "apology", "courtesy", "formal connectives"):
        assert audit.overall.feature(name).leans == 0
    for name in ("just", "maybe", "no need", "contractions", "exclamation"):
        assert audit.overall.feature(name).leans == 1
    assert not audit.overall.sentence_length.gated
    assert audit.overall.feature("referral").ratio == 1.0  # what is said (referrals) is balanced


def test_render_is_plain_text():
    text = register.render("title", audit_items(_planted_items(plant=True)))
    assert text.startswith("title\n") and "per domain" in text
    assert text.splitlines()[-1] == "register audit: GATED (overall: just, please; alpha: just, please; beta: please)"
    clean = register.render("t", audit_texts(["Go home now."] * 3, ["Go home now."] * 3))
    assert clean.splitlines()[-1] == "register audit: clean (no register feature gated)"
