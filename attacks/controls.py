"""Controls for context length: `matched-context` repeats another attack with its added text replaced by neutral
text of the same length and shape, so the report can give attack minus control.

Why: any added context moves a small model's preferences (longer prompts shift both references), so a persona
prompt's effect mixes "a persona that pushes toward harm" with "a long system message". The control keeps the
second and drops the first: the attack's system text becomes neutral notes of the same length; its inserted
turns (many-shot shots, escalation scripts) become neutral question-and-answer turns of the same roles and
lengths; text it puts before or after the question becomes neutral text of the same length there. Attacks that
rewrite the question itself (encodings, reformulations) or force a reply prefix have no neutral twin and are
refused. The neutral text is ours (attacks/data/neutral_context.jsonl), chosen deterministically per item.

The wrapped attack is written `of=NAME` or, with parameters, `of=NAME/key=value` ('/' for ':').
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from persist.attacks.base import Attack
from persist.conditions import Condition
from persist.errors import ConfigError
from persist.registry import ATTACKS, PluginSpec
from persist.schema import Item, Message

NEUTRAL = Path(__file__).parent / "data" / "neutral_context.jsonl"


@lru_cache(maxsize=1)
def neutral_pool() -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str, str], ...]]:
    """(statements as (id, text), exchanges as (id, user, assistant))."""
    rows = [json.loads(line) for line in NEUTRAL.read_text(encoding="utf-8").splitlines() if line.strip()]
    return (tuple((r["id"], r["text"]) for r in rows if r["kind"] == "statement"),
            tuple((r["id"], r["user"], r["assistant"]) for r in rows if r["kind"] == "exchange"))


def ranked(pool: tuple, key: str) -> list:
    return sorted(pool, key=lambda row: hashlib.sha256(f"{key}:{row[0]}".encode()).hexdigest())


def fill(texts: list[str], length: int) -> str:
    """Join neutral texts (cycling) to `length` characters, cut at a word boundary."""
    out = ""
    i = 0
    while len(out) < length:
        out += (" " if out else "") + texts[i % len(texts)]
        i += 1
    cut = out[:length]
    if len(out) > length and " " in cut:
        cut = cut[: cut.rfind(" ")]
    return cut.rstrip()


def neutral_statements(length: int, key: str) -> str:
    statements, _ = neutral_pool()
    return fill([t for _, t in ranked(statements, key)], length)


def neutral_turns(turns: list[Message], key: str) -> list[Message]:
    """Neutral user/assistant turns with the same roles and lengths as `turns`."""
    _, exchanges = neutral_pool()
    order = ranked(exchanges, key)
    users = [u for _, u, _ in order]
    answers = [a for _, _, a in order]
    out, nu, na = [], 0, 0
    for m in turns:
        if m.role == "user":
            src, nu = users[nu:] + users[:nu], nu + 1
        else:
            src, na = answers[na:] + answers[:na], na + 1
        out.append(Message(m.role, fill(src, len(m.content))))
    return out


def neutralise(item: Item, messages: tuple[Message, ...], prefill: str, attack: str, key: str) -> tuple[Message, ...]:
    """The attack's conversation with everything it added replaced by neutral text of the same length and shape."""
    if prefill:
        raise ConfigError(f"matched-context: {attack} forces the reply to begin with set words; there is no neutral "
                          "prefix of the same meaning, so it has no matched control")
    own_system = next((m.content for m in item.messages if m.role == "system"), None)
    own_rest = [m for m in item.messages if m.role != "system"]
    system = next((m.content for m in messages if m.role == "system"), None)
    rest = [m for m in messages if m.role != "system"]
    out: list[Message] = []
    if system is not None and system != own_system:
        tail = f"\n\n{own_system}" if own_system and system.endswith(f"\n\n{own_system}") else ""
        out.append(Message("system", neutral_statements(len(system) - len(tail), key) + tail))
    elif system is not None:
        out.append(Message("system", system))
    inserted = len(rest) - len(own_rest)
    if inserted < 0 or rest[inserted:-1] != own_rest[:-1]:
        raise ConfigError(f"matched-context: {attack} changes the item's own turns; only attacks that add context "
                          "(a system message, earlier turns, text around the question) have a matched control")
    out += neutral_turns(rest[:inserted], key)
    out += rest[inserted:-1]
    asked, question = rest[-1].content, own_rest[-1].content
    if asked == question:
        out.append(rest[-1])
    elif asked.endswith(question):
        added = len(asked) - len(question) - 2  # the neutral text, then a blank line, then the question
        out.append(Message("user", neutral_statements(added, key + ":q") + "\n\n" + question))
    elif asked.startswith(question):
        added = len(asked) - len(question) - 2
        out.append(Message("user", question + "\n\n" + neutral_statements(added, key + ":q")))
    else:
        raise ConfigError(f"matched-context: {attack} rewrites the question itself; a neutral context cannot match "
                          "it (use it without a matched control)")
    return tuple(out)


@ATTACKS.register
@dataclass(frozen=True)
class MatchedContext(Attack):
    name = "matched-context"
    version = "1"
    description = ("control: another attack's added context replaced by neutral text of the same length and shape; "
                   "of=NAME or of=NAME/key=value")
    control = True
    of: str = "persona-bad-medical"

    def __post_init__(self) -> None:
        if not type(self.wrapped()).adds_context:
            raise ConfigError(f"matched-context: {self.of} does not only add context (it rewrites the question, "
                              "forces a reply prefix or answers for the model), so it has no neutral twin")

    def wrapped(self) -> Attack:
        spec = PluginSpec.parse(self.of.replace("/", ":"), "attack")
        if spec.name == self.name:
            raise ConfigError("matched-context cannot wrap itself")
        return ATTACKS.build(spec)

    @property
    def control_for(self) -> Condition:
        return self.wrapped().condition

    @property
    def condition(self) -> Condition:
        """Always names the wrapped attack, even the default one."""
        return Condition("attack", self.name, (("of", self.of),))

    def variants(self, item: Item) -> list[tuple[tuple[Message, ...], str]]:
        inner = self.wrapped()
        return [(neutralise(item, v.messages, v.prefill, self.of, f"{item.id}:{self.of}:{v.index}"), "")
                for v in inner.transform(item)]

