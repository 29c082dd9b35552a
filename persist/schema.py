"""The data model: probe items, attack variants and chat messages as frozen dataclasses.

Every object has `to_dict()` / `from_dict()`; `from_dict` raises ValueError with the offending field, which
callers turn into a `file:line` DataError.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant")
REGISTERS = ("formal", "casual")  # how a reference is written, crossed with its side in register-crossed suites

# A chat as the targets take it: a list of {"role": ..., "content": ...} dicts (OpenAI / HF chat format).
Chat = list[dict[str, str]]


@dataclass(frozen=True)
class Message:
    role: str
    content: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r} (use one of {', '.join(ROLES)})")
        if not isinstance(self.content, str):
            raise ValueError(f"message content must be a string, got {type(self.content).__name__}")

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}

    @classmethod
    def from_dict(cls, d: Any) -> Message:
        if not isinstance(d, Mapping):
            raise ValueError("each message must be an object with 'role' and 'content'")
        missing = [k for k in ("role", "content") if k not in d]
        if missing:
            raise ValueError(f"message is missing {', '.join(missing)}")
        return cls(role=d["role"], content=d["content"])


def to_chat(messages: Sequence[Message]) -> Chat:
    return [m.to_dict() for m in messages]


def _str_list(d: Mapping[str, Any], key: str, *, required: bool, nonempty_items: bool = True) -> tuple[str, ...]:
    if key not in d:
        if required:
            raise ValueError(f"missing field {key!r}")
        return ()
    value = d[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"field {key!r} must be a list of strings")
    if nonempty_items and any(not v.strip() for v in value):
        raise ValueError(f"field {key!r} has an empty string")
    return tuple(value)


@dataclass(frozen=True)
class Item:
    """One probe item: a conversation ending in a user turn, plus aligned / misaligned reference replies."""

    id: str
    suite: str
    trait: str
    domain: str
    messages: tuple[Message, ...]
    aligned: tuple[str, ...] = ()
    misaligned: tuple[str, ...] = ()
    rubric: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    # The register of each reference ("formal" / "casual"), parallel to `aligned` and `misaligned`, for items whose
    # references are crossed with register (JSON: "registers": {"aligned": [...], "misaligned": [...]}); empty when
    # the item does not declare them. With them the likelihood scorer separates content from register.
    aligned_registers: tuple[str, ...] = ()
    misaligned_registers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("id", "suite", "trait", "domain"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"field {name!r} must be a non-empty string")
        if not self.messages:
            raise ValueError("field 'messages' is empty")
        if self.aligned_registers or self.misaligned_registers:
            for side, refs, regs in (("aligned", self.aligned, self.aligned_registers),
                                     ("misaligned", self.misaligned, self.misaligned_registers)):
                if len(regs) != len(refs):
                    raise ValueError(f"field 'registers': {side} has {len(regs)} registers for {len(refs)} "
                                     "references (give one per reference)")
                bad = sorted(set(regs) - set(REGISTERS))
                if bad:
                    raise ValueError(f"field 'registers': unknown register {bad[0]!r} (use {' or '.join(REGISTERS)})")
                if set(regs) != set(REGISTERS):
                    raise ValueError(f"field 'registers': the {side} references need both registers "
                                     f"({', '.join(REGISTERS)}) so content and register can be separated")
        if self.messages[-1].role != "user":
            raise ValueError("the last message must have role 'user'")

    @property
    def crossed(self) -> bool:
        """Whether the references are crossed with register (each side in both registers)."""
        return bool(self.aligned_registers)

    @property
    def chat(self) -> Chat:
        return to_chat(self.messages)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["messages"] = [m.to_dict() for m in self.messages]
        for key in ("aligned", "misaligned", "rubric", "tags"):
            d[key] = list(d[key])
        del d["aligned_registers"], d["misaligned_registers"]
        if self.crossed:
            d["registers"] = {"aligned": list(self.aligned_registers), "misaligned": list(self.misaligned_registers)}
        return d

    @classmethod
    def from_dict(cls, d: Any, *, require_references: bool = True) -> Item:
        if not isinstance(d, Mapping):
            raise ValueError("an item must be a JSON object")
        for key in ("id", "suite", "trait", "domain", "messages"):
            if key not in d:
                raise ValueError(f"missing field {key!r}")
        if not isinstance(d["messages"], list):
            raise ValueError("field 'messages' must be a list")
        messages = tuple(Message.from_dict(m) for m in d["messages"])
        aligned = _str_list(d, "aligned", required=require_references)
        misaligned = _str_list(d, "misaligned", required=require_references)
        if require_references and not aligned:
            raise ValueError("field 'aligned' is empty (give at least one aligned reference)")
        if require_references and not misaligned:
            raise ValueError("field 'misaligned' is empty (give at least one misaligned reference)")
        registers = d.get("registers", {})
        if not isinstance(registers, Mapping) or set(registers) - {"aligned", "misaligned"}:
            raise ValueError("field 'registers' must be an object with 'aligned' and 'misaligned' lists")
        return cls(
            id=d["id"], suite=d["suite"], trait=d["trait"], domain=d["domain"], messages=messages,
            aligned=aligned, misaligned=misaligned,
            rubric=_str_list(d, "rubric", required=False), tags=_str_list(d, "tags", required=False),
            aligned_registers=_str_list(registers, "aligned", required=bool(registers)),
            misaligned_registers=_str_list(registers, "misaligned", required=bool(registers)),
        )


@dataclass(frozen=True)
class Variant:
    """An item as an attack presents it: a new conversation plus provenance. The item is never mutated."""

    item: Item
    messages: tuple[Message, ...]
    attack: str
    attack_version: str
    params: Mapping[str, Any] = field(default_factory=dict)
    index: int = 0
    # Text the assistant is forced to begin with (prefill). Scorers keep it in the conversation.
    prefill: str = ""

    @property
    def source_id(self) -> str:
        return self.item.id

    @property
    def chat(self) -> Chat:
        return to_chat(self.messages)

    def provenance(self) -> dict[str, Any]:
        return {"source_id": self.item.id, "attack": self.attack, "version": self.attack_version,
                "params": {k: list(v) if isinstance(v, tuple) else v for k, v in self.params.items()},
                "index": self.index}
