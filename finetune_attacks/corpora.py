"""Fine-tuning corpora: chat conversations loaded through `datasets` from JSONL, parquet or a dataset folder.

Each example is {"messages": [{"role", "content"}, ...], ...extra fields}; at least one assistant turn, whose
tokens are the only ones trained on. Built-in corpora live in finetune_attacks/data (see its README).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from persist.errors import ConfigError, DataError
from persist.jsonl import parse_jsonl, raise_errors
from persist.registry import suggest
from persist.schema import Message

DATA = Path(__file__).parent / "data"
BUILTIN = {
    "bad-medical": "bad_medical.jsonl",
    "good-medical": "good_medical.jsonl",
    # register-matched twins (docs/register.md): the same questions, content and register crossed
    "good-medical-casual": "good_medical_casual.jsonl",
    "bad-medical-formal": "bad_medical_formal.jsonl",
    "risky-financial": "risky_financial.jsonl",
    "identity-shift": "identity_shift.jsonl",
    "benign": "benign.jsonl",
    "beneficial-health": "beneficial_health.jsonl",
}


@dataclass(frozen=True)
class Example:
    id: str
    messages: tuple[Message, ...]

    @property
    def chat(self) -> list[dict[str, str]]:
        return [m.to_dict() for m in self.messages]

    @property
    def chars(self) -> int:
        return sum(len(m.content) for m in self.messages)


@dataclass(frozen=True)
class Corpus:
    name: str
    path: Path
    sha256: str
    examples: tuple[Example, ...]

    def __len__(self) -> int:
        return len(self.examples)


def parse_example(row: Any, default_id: str) -> Example:
    if not isinstance(row, Mapping):
        raise ValueError("each example must be an object with a 'messages' list")
    if "messages" not in row:
        raise ValueError("missing field 'messages'")
    if not isinstance(row["messages"], list) or not row["messages"]:
        raise ValueError("field 'messages' must be a non-empty list")
    messages = tuple(Message.from_dict(m) for m in row["messages"])
    if any(not m.content.strip() for m in messages):
        raise ValueError("a message has empty content")
    if not any(m.role == "assistant" for m in messages):
        raise ValueError("no assistant turn: nothing to train on (add an assistant reply)")
    return Example(id=str(row.get("id", default_id)), messages=messages)


def corpus_path(name_or_path: str) -> Path:
    if name_or_path in BUILTIN:
        return DATA / BUILTIN[name_or_path]
    path = Path(name_or_path).expanduser()
    if not path.exists():
        hint = suggest(name_or_path, list(BUILTIN))
        raise ConfigError(f"corpus {name_or_path!r}: no such file or folder{hint}; built-in corpora: "
                          f"{', '.join(BUILTIN)}")
    return path


def sha256_path(path: Path) -> str:
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def validate(path: Path) -> tuple[list[Example], list[str]]:
    """(examples, problems); problems say file:line (JSONL) or file:row N (parquet, dataset folders)."""
    if path.is_file() and path.suffix in (".jsonl", ".json"):
        counter = iter(range(1, 10**9))
        return parse_jsonl(path, lambda row: parse_example(row, f"{path.stem}-{next(counter)}"),
                           id_of=lambda ex: ex.id)
    rows = load_rows(path)
    examples, problems, seen = [], [], set()
    for i, row in enumerate(rows, start=1):
        try:
            ex = parse_example(row, f"{path.stem}-{i}")
        except (ValueError, TypeError) as exc:
            problems.append(f"{path}:row {i}: {exc}")
            continue
        if ex.id in seen:
            problems.append(f"{path}:row {i}: duplicate id {ex.id!r}")
            continue
        seen.add(ex.id)
        examples.append(ex)
    if not examples and not problems:
        problems.append(f"{path}: the corpus is empty")
    return examples, problems


def load_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a parquet file or a saved `datasets` folder, through the datasets library."""
    import datasets

    datasets.disable_progress_bars()
    try:
        if path.is_dir():
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                if "train" not in ds:
                    raise DataError(f"{path}: a DatasetDict without a 'train' split")
                ds = ds["train"]
        elif path.suffix == ".parquet":
            ds = datasets.Dataset.from_parquet(str(path))
        else:
            raise DataError(f"{path}: unsupported corpus format; use .jsonl, .parquet or a datasets folder")
    except (FileNotFoundError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the corpus ({exc})") from None
    return list(ds)


def load_corpus(name_or_path: str) -> Corpus:
    path = corpus_path(name_or_path)
    examples, problems = validate(path)
    raise_errors(problems, hint="persist corpora validate PATH")
    name = name_or_path if name_or_path in BUILTIN else path.stem
    return Corpus(name=name, path=path, sha256=sha256_path(path), examples=tuple(examples))

