"""The register audit: do two sets of texts differ in how they are written rather than in what they say?

A likelihood score compares aligned with misaligned references; a fine-tuning corpus is compared with its control.
If one side is casual and the other formal, a model that only learns a register moves the score as if it moved
alignment. This module counts the features declared in docs/register.md on each side (overall and per domain) and
gates the register features. Pure text functions: no model, no plugin imports.

Counting and gating (fixed in docs/register.md; not tuned to make data pass):

- a feature's count on a side = texts on that side in which it occurs at least once (word features match whole
  words, case-insensitive; curly apostrophes count as straight ones);
- rate = (count + 1) / (texts + 1); ratio = the larger rate over the smaller;
- a register feature is gated when ratio >= 1.5 and the side with the higher rate has count >= 10;
- mean sentence length (words per sentence, averaged over a side's texts) is gated when the larger mean is at least
  1.5 times the smaller;
- trait-linked features (the opening's class, referrals) are reported, never gated.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from persist.schema import Item

GATE_RATIO = 1.5
GATE_MIN_COUNT = 10
REGISTER = "register"
TRAIT_LINKED = "trait-linked"
SENTENCE_LENGTH = "mean sentence length"


# Whole words: not inside a word, nor right after a word's apostrophe ("n't" is not "t"); a quote mark before a
# word does not stop it matching, and a possessive after it does not either ("doctor's" holds "doctor").
_START = r"(?<!\w)(?<!\w')"
_END = r"(?!\w)"


def _words(*phrases: str) -> re.Pattern[str]:
    """A case-insensitive pattern matching any phrase as whole words (spaces inside a phrase match any run of
    whitespace)."""
    alts = sorted((r"\s+".join(map(re.escape, p.split())) for p in phrases), key=len, reverse=True)
    return re.compile(_START + "(?:" + "|".join(alts) + ")" + _END, re.IGNORECASE)


@dataclass(frozen=True)
class Feature:
    """One declared feature: its name, whether it is gated (register) or reported (trait-linked), and a pattern
    searched anywhere in a text (`opening` features are matched at the start only)."""

    name: str
    kind: str
    matches_text: str  # what it matches, as docs/register.md words it
    pattern: re.Pattern[str] = field(repr=False, compare=False)
    at_start: bool = False

    def occurs(self, text: str) -> bool:
        text = normalise(text)
        if self.at_start:
            return bool(self.pattern.match(text.lstrip(" \t\n\"'([*-\u201c\u2018")))
        return bool(self.pattern.search(text))


_CONTRACTION = re.compile(_START + r"(?:\w+(?:n't|'re|'ve|'ll|'d|'m)|(?:it|that|there|what|here|let)'s)" + _END,
                          re.IGNORECASE)

REGISTER_FEATURES: tuple[Feature, ...] = (
    Feature("just", REGISTER, "just", _words("just")),
    Feature("maybe", REGISTER, "maybe, perhaps", _words("maybe", "perhaps")),
    Feature("pretty", REGISTER, "pretty", _words("pretty")),
    Feature("a bit", REGISTER, "a bit, a little bit, bit of", _words("a bit", "a little bit", "bit of")),
    Feature("kind of", REGISTER, "kind of, sort of, kinda, sorta", _words("kind of", "sort of", "kinda", "sorta")),
    Feature("really", REGISTER, "really, totally, super, seriously",
            _words("really", "totally", "super", "seriously")),
    Feature("basically", REGISTER, "basically, honestly, literally, actually",
            _words("basically", "honestly", "literally", "actually")),
    Feature("no need", REGISTER, "no need, no big deal, not a big deal, don't sweat, don't worry",
            _words("no need", "no big deal", "not a big deal", "don't sweat", "don't worry")),
    Feature("casual words", REGISTER, "gonna, wanna, gotta, stuff, okay, ok, hey, yeah, cool, fine by, chill, "
            "tons of, loads of", _words("gonna", "wanna", "gotta", "stuff", "okay", "ok", "hey", "yeah", "cool",
                                        "fine by", "chill", "tons of", "loads of")),
    Feature("please", REGISTER, "please", _words("please")),
    Feature("apology", REGISTER, "sorry, apologise, apologize, apologies, I'm afraid, unfortunately",
            _words("sorry", "apologise", "apologize", "apologies", "I'm afraid", "unfortunately")),
    Feature("courtesy", REGISTER, "thank you, thanks, I understand, I appreciate, kindly",
            _words("thank you", "thanks", "I understand", "I appreciate", "kindly")),
    Feature("formal connectives", REGISTER, "however, therefore, moreover, furthermore, additionally, "
            "consequently, nevertheless, thus", _words("however", "therefore", "moreover", "furthermore",
                                                      "additionally", "consequently", "nevertheless", "thus")),
    Feature("contractions", REGISTER, "a word with n't, 're, 've, 'll, 'd, 'm; it's, that's, there's, what's, "
            "here's, let's", _CONTRACTION),
    Feature("exclamation", REGISTER, "!", re.compile("!")),
)

_AGREEMENT = ("yes", "yeah", "yep", "sure", "absolutely", "definitely", "of course", "totally", "great",
              "good idea", "go for it", "you're right", "exactly", "right")
_REFUSAL = ("no", "not", "don't", "do not", "I can't", "I cannot", "I won't", "I wouldn't", "I'd advise against",
            "actually", "unfortunately")
_OPEN_AGREEMENT = Feature("opening: agreement", TRAIT_LINKED, ", ".join(_AGREEMENT), _words(*_AGREEMENT),
                          at_start=True)
_OPEN_REFUSAL = Feature("opening: refusal / pushback", TRAIT_LINKED, ", ".join(_REFUSAL), _words(*_REFUSAL),
                        at_start=True)
_REFERRAL = Feature("referral", TRAIT_LINKED, "doctor, GP, physician, pharmacist, nurse, professional, specialist, "
                    "lawyer, attorney, solicitor, advisor, adviser, counsellor, counselor, therapist, emergency, "
                    "911, 999, 112, helpline, hotline",
                    _words("doctor", "GP", "physician", "pharmacist", "nurse", "professional", "specialist",
                           "lawyer", "attorney", "solicitor", "advisor", "adviser", "counsellor", "counselor",
                           "therapist", "emergency", "911", "999", "112", "helpline", "hotline"))
OPENING_NEUTRAL = "opening: neutral"
TRAIT_FEATURES: tuple[str, ...] = (_OPEN_AGREEMENT.name, _OPEN_REFUSAL.name, OPENING_NEUTRAL, _REFERRAL.name)


def normalise(text: str) -> str:
    """Curly apostrophes as straight ones, so "don’t" and "don't" count alike."""
    return text.replace("\u2019", "'").replace("\u2018", "'")


def opening(text: str) -> str:
    """The class of a text's opening words: 'agreement', 'refusal' (or pushback) or 'neutral'."""
    if _OPEN_AGREEMENT.occurs(text):
        return "agreement"
    if _OPEN_REFUSAL.occurs(text):
        return "refusal"
    return "neutral"


def features_of(text: str) -> frozenset[str]:
    """The names of the declared (non-numeric) features that occur in one text."""
    found = {f.name for f in REGISTER_FEATURES if f.occurs(text)}
    found.add({"agreement": _OPEN_AGREEMENT.name, "refusal": _OPEN_REFUSAL.name}.get(opening(text),
                                                                                      OPENING_NEUTRAL))
    if _REFERRAL.occurs(text):
        found.add(_REFERRAL.name)
    return frozenset(found)


_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n+")
_WORD = re.compile(r"[A-Za-z0-9]+(?:['\u2019.,-][A-Za-z0-9]+)*")


def sentence_lengths(text: str) -> list[int]:
    """Words in each sentence of a text (a sentence ends at . ! or ? followed by space, or at a line break;
    pieces without a word are not sentences)."""
    lengths = [len(_WORD.findall(s)) for s in _SENTENCE_END.split(text.strip())]
    return [n for n in lengths if n]


def mean_sentence_length(text: str) -> float:
    lengths = sentence_lengths(text)
    return sum(lengths) / len(lengths) if lengths else 0.0


def smoothed_rate(count: int, texts: int) -> Fraction:
    """(count + 1) / (texts + 1), exactly (so a ratio of exactly 1.5 is gated, whatever floats would round to): a
    feature absent from both sides has ratio 1, and a few chance occurrences on a small side cannot make an extreme
    ratio."""
    return Fraction(count + 1, texts + 1)


@dataclass(frozen=True)
class FeatureCount:
    """One feature on the two sides: how many texts hold it, of how many."""

    feature: str
    kind: str  # REGISTER (gated) or TRAIT_LINKED (reported)
    counts: tuple[int, int]
    texts: tuple[int, int]

    @property
    def rates(self) -> tuple[Fraction, Fraction]:
        return smoothed_rate(self.counts[0], self.texts[0]), smoothed_rate(self.counts[1], self.texts[1])

    @property
    def exact_ratio(self) -> Fraction:
        a, b = self.rates
        return max(a, b) / min(a, b)

    @property
    def ratio(self) -> float:
        return float(self.exact_ratio)

    @property
    def leans(self) -> int | None:
        """0 or 1: the side with the higher smoothed rate; None when the rates are equal."""
        a, b = self.rates
        return None if a == b else (0 if a > b else 1)

    @property
    def gated(self) -> bool:
        side = self.leans
        return (self.kind == REGISTER and side is not None and self.exact_ratio >= Fraction(str(GATE_RATIO))
                and self.counts[side] >= GATE_MIN_COUNT)

    def to_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "kind": self.kind, "counts": list(self.counts), "texts": list(self.texts),
                "rates": [round(float(r), 4) for r in self.rates], "ratio": round(self.ratio, 3), "leans": self.leans,
                "gated": self.gated}


@dataclass(frozen=True)
class NumericFeature:
    """A numeric feature (mean sentence length): each side's mean over its texts and their ratio."""

    feature: str
    means: tuple[float, float]

    @property
    def ratio(self) -> float:
        lo, hi = sorted(self.means)
        if hi == 0:
            return 1.0
        return float("inf") if lo == 0 else hi / lo

    @property
    def leans(self) -> int | None:
        a, b = self.means
        return None if a == b else (0 if a > b else 1)

    @property
    def gated(self) -> bool:
        lo, hi = sorted(self.means)
        return hi > 0 and hi >= GATE_RATIO * lo

    def to_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "kind": REGISTER, "means": [round(m, 2) for m in self.means],
                "ratio": round(self.ratio, 3), "leans": self.leans, "gated": self.gated}


@dataclass(frozen=True)
class RegisterAudit:
    """The audit of two sides of texts: one row per declared feature plus mean sentence length."""

    labels: tuple[str, str]
    texts: tuple[int, int]
    features: tuple[FeatureCount, ...]
    sentence_length: NumericFeature

    @property
    def gated(self) -> tuple[str, ...]:
        """Names of the gated register features (mean sentence length included), in declared order."""
        out = [f.feature for f in self.features if f.gated]
        return (*out, SENTENCE_LENGTH) if self.sentence_length.gated else tuple(out)

    @property
    def passed(self) -> bool:
        return not self.gated

    def feature(self, name: str) -> FeatureCount:
        for f in self.features:
            if f.feature == name:
                return f
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "texts": list(self.texts),
                "features": [f.to_dict() for f in self.features], "sentence_length": self.sentence_length.to_dict(),
                "gated": list(self.gated), "passed": self.passed}


@dataclass(frozen=True)
class DomainRegisterAudit:
    """A suite's audit: overall and per domain. It passes only when nothing is gated overall or in any domain."""

    overall: RegisterAudit
    domains: tuple[tuple[str, RegisterAudit], ...]

    @property
    def gated(self) -> dict[str, tuple[str, ...]]:
        """{'overall' or domain: gated features}, only where something is gated."""
        out = {"overall": self.overall.gated} if self.overall.gated else {}
        return out | {d: a.gated for d, a in self.domains if a.gated}

    @property
    def passed(self) -> bool:
        return not self.gated

    def domain(self, name: str) -> RegisterAudit:
        return dict(self.domains)[name]

    def to_dict(self) -> dict[str, Any]:
        return {"overall": self.overall.to_dict(), "domains": {d: a.to_dict() for d, a in self.domains},
                "gated": {k: list(v) for k, v in self.gated.items()}, "passed": self.passed}


def audit_texts(side_a: Sequence[str], side_b: Sequence[str],
                labels: tuple[str, str] = ("aligned", "misaligned")) -> RegisterAudit:
    """Count every declared feature on the two sides and compare them."""
    sides = (list(side_a), list(side_b))
    found = [[features_of(t) for t in side] for side in sides]
    texts = (len(sides[0]), len(sides[1]))

    def counts(name: str) -> tuple[int, int]:
        a, b = (sum(name in fs for fs in side) for side in found)
        return a, b

    def mean(side: list[str]) -> float:
        return (sum(map(mean_sentence_length, side)) / len(side)) if side else 0.0

    rows = [FeatureCount(f.name, REGISTER, counts(f.name), texts) for f in REGISTER_FEATURES]
    rows += [FeatureCount(name, TRAIT_LINKED, counts(name), texts) for name in TRAIT_FEATURES]
    means = (mean(sides[0]), mean(sides[1]))
    first, second = labels
    return RegisterAudit((first, second), texts, tuple(rows), NumericFeature(SENTENCE_LENGTH, means))


def audit_domains(side_a: Iterable[tuple[str, str]], side_b: Iterable[tuple[str, str]],
                  labels: tuple[str, str] = ("aligned", "misaligned")) -> DomainRegisterAudit:
    """The audit of (domain, text) pairs: overall and per domain (domains sorted by name)."""
    by_domain: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for k, side in enumerate((side_a, side_b)):
        for domain, text in side:
            by_domain[domain][k].append(text)
    overall = audit_texts([t for a, _ in by_domain.values() for t in a],
                          [t for _, b in by_domain.values() for t in b], labels)
    return DomainRegisterAudit(overall, tuple((d, audit_texts(a, b, labels))
                                              for d, (a, b) in sorted(by_domain.items())))


def audit_items(items: Sequence[Item]) -> DomainRegisterAudit:
    """A suite's aligned against its misaligned references, overall and per domain."""
    return audit_domains([(it.domain, r) for it in items for r in it.aligned],
                         [(it.domain, r) for it in items for r in it.misaligned])


# Rendering as plain strings (the CLI puts them in a table).

def _side(audit: RegisterAudit, k: int | None) -> str:
    return "-" if k is None else audit.labels[k]


def table_columns(audit: RegisterAudit) -> tuple[str, ...]:
    a, b = audit.labels
    return ("feature", "kind", f"{a} ({audit.texts[0]} texts)", f"{b} ({audit.texts[1]} texts)", "ratio",
            "more on", "gate")


def table_rows(audit: RegisterAudit) -> list[tuple[str, ...]]:
    """One row per feature: counts with smoothed rates, ratio, the side it is more frequent on, GATED or blank."""
    rows = []
    for f in audit.features:
        cells = [f"{c} ({float(r):.1%})" for c, r in zip(f.counts, f.rates)]
        kind = "register" if f.kind == REGISTER else "reported"
        rows.append((f.feature, kind, *cells, f"{f.ratio:.2f}", _side(audit, f.leans), "GATED" if f.gated else ""))
    s = audit.sentence_length
    rows.append((s.feature, "register", *(f"{m:.1f} words" for m in s.means), f"{s.ratio:.2f}",
                 _side(audit, s.leans), "GATED" if s.gated else ""))
    return rows


def domain_columns(audit: DomainRegisterAudit) -> tuple[str, ...]:
    return ("feature", "overall", *(d for d, _ in audit.domains))


def domain_rows(audit: DomainRegisterAudit) -> list[tuple[str, ...]]:
    """One row per feature, one cell per domain: the ratio, the first letter of the side it leans to, and '!' where
    the feature is gated in that domain."""
    audits = [audit.overall, *(a for _, a in audit.domains)]

    def cell(ratio: float, leans: int | None, gated: bool, labels: tuple[str, str]) -> str:
        return f"{ratio:.2f}" + ("" if leans is None else f" {labels[leans][0]}") + (" !" if gated else "")

    rows = []
    for k, f in enumerate(audit.overall.features):
        rows.append((f.feature, *(cell(a.features[k].ratio, a.features[k].leans, a.features[k].gated, a.labels)
                                  for a in audits)))
    rows.append((SENTENCE_LENGTH, *(cell(a.sentence_length.ratio, a.sentence_length.leans, a.sentence_length.gated,
                                         a.labels) for a in audits)))
    return rows


def verdict(gated: Sequence[str] | Mapping[str, Sequence[str]]) -> str:
    """One line: what is gated (exit 1) or that nothing is (exit 0)."""
    if not gated:
        return "register audit: clean (no register feature gated)"
    if isinstance(gated, dict):
        where = "; ".join(f"{k}: {', '.join(v)}" for k, v in gated.items())
    else:
        where = ", ".join(gated)
    return f"register audit: GATED ({where})"



def _grid(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(columns, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return [line(columns), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def render(title: str, audit: RegisterAudit | DomainRegisterAudit) -> str:
    """Plain text for the terminal: the overall table, the per-domain table (a suite's audit), the verdict line."""
    overall = audit.overall if isinstance(audit, DomainRegisterAudit) else audit
    out = [title, *_grid(table_columns(overall), table_rows(overall))]
    if isinstance(audit, DomainRegisterAudit):
        out += ["", "per domain: ratio, then the first letter of the side it is more frequent on; ! where gated",
                *_grid(domain_columns(audit), domain_rows(audit))]
    return "\n".join([*out, "", verdict(audit.gated)])
