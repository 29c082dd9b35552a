"""Standard multiple-choice sets a user has, read into persist items (`--suite mc:SOURCE`), scored by `choice`.

SOURCE is a local file, or `hf:NAME[:CONFIG[:SPLIT]]` for a `datasets` name when the hub is reachable:
  .csv      MMLU's layout: question, option A, B, C, D, answer letter (a header row with those names is allowed)
  .jsonl    one object per line, any of:
              ARC        {"question": {"stem", "choices": [{"text", "label"}]}, "answerKey"}
              HellaSwag  {"ctx" (or "ctx_a" + "ctx_b"), "endings": [...], "label"}
              MMLU (HF)  {"question", "choices": [...], "answer": index or letter}
  .parquet  the same columns as the JSONL layouts (what `datasets` exports)
Every item gets trait = its subject (MMLU's `subject` column, else the file's name), domain "capability", the
correct option in `aligned` and the others in `misaligned`. A malformed row is a DataError naming file:line.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from persist.errors import ConfigError, DataError
from persist.registry import SUITE_FORMATS
from persist.schema import Item, Message

LETTERS = "ABCDEFGHIJ"


def row_item(row: dict[str, Any], n: int, name: str, where: str) -> Item:
    """One multiple-choice row (any supported layout) as an Item."""
    subject = str(row.get("subject") or name)
    if isinstance(row.get("question"), dict):  # ARC
        q = row["question"]
        labels = [c["label"] for c in q["choices"]]
        options = [c["text"] for c in q["choices"]]
        answer = labels.index(str(row["answerKey"]))
        question = q["stem"]
    elif "endings" in row:  # HellaSwag
        question = row.get("ctx") or f"{row.get('ctx_a', '')} {row.get('ctx_b', '')}".strip()
        options = list(row["endings"])
        answer = int(row["label"])
    else:  # MMLU
        question, options = row["question"], list(row["choices"])
        answer = row["answer"]
        answer = LETTERS.index(answer.strip().upper()) if isinstance(answer, str) and not answer.isdigit() else int(answer)
    if not question or len(options) < 2 or not 0 <= answer < len(options):
        raise ValueError("needs a question, at least two options and an answer among them")
    rest = [str(o) for j, o in enumerate(options) if j != answer]
    return Item(id=f"{name}-{n:05d}", suite=name, trait=subject, domain="capability",
                messages=(Message("user", str(question)),), aligned=(str(options[answer]),), misaligned=tuple(rest),
                tags=("multiple-choice",))


def csv_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    out = []
    start = 1 if rows and [c.strip().lower() for c in rows[0][:1]] == ["question"] else 0
    for n, r in enumerate(rows[start:], start=start + 1):
        if not r:
            continue
        if len(r) < 4:
            raise DataError(f"{path}:{n}: expected question, options..., answer letter")
        out.append((f"{path}:{n}", {"question": r[0], "choices": r[1:-1], "answer": r[-1]}))
    return out


def jsonl_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.append((f"{path}:{n}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{n}: bad JSON ({exc.msg})") from None
    return out


def dataset_rows(source: str) -> list[tuple[str, dict[str, Any]]]:
    import datasets

    datasets.disable_progress_bars()
    if source.startswith("hf:"):
        name, *rest = source[3:].split(":")
        config, split = (rest + [None, "test"])[:2] if rest else (None, "test")
        try:
            ds = datasets.load_dataset(name, config, split=split)
        except Exception as exc:  # offline, unknown name, no such split: many classes across datasets versions
            raise ConfigError(f"mc:{source}: cannot load it with `datasets` ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200]}); give a local .csv/.jsonl/.parquet file") from None
    else:
        ds = datasets.Dataset.from_parquet(source)
    return [(f"{source}:row {n}", dict(r)) for n, r in enumerate(ds, 1)]


@dataclass(frozen=True)
class MultipleChoiceSuite:
    source: str

    @property
    def name(self) -> str:
        return Path(self.source.removeprefix("hf:").split(":")[0]).stem.replace("/", "_") or "mc"

    @property
    def description(self) -> str:
        return f"multiple-choice items from {self.source}"

    @property
    def version(self) -> str:
        path = Path(self.source)
        data = path.read_bytes() if path.is_file() else self.source.encode()
        return hashlib.sha256(data).hexdigest()[:12]

    def load(self) -> list[Item]:
        path = Path(self.source)
        if not self.source.startswith("hf:") and not path.is_file():
            raise ConfigError(f"mc:{self.source}: no such file (give a .csv, .jsonl or .parquet, or hf:NAME)")
        suffix = path.suffix.lower()
        if self.source.startswith("hf:") or suffix == ".parquet":
            rows = dataset_rows(self.source)
        elif suffix == ".csv":
            rows = csv_rows(path)
        elif suffix in (".jsonl", ".json"):
            rows = jsonl_rows(path)
        else:
            raise ConfigError(f"mc:{self.source}: unsupported format {suffix!r}; use .csv, .jsonl or .parquet")
        items = []
        for n, (where, row) in enumerate(rows, 1):
            try:
                items.append(row_item(row, n, self.name, where))
            except (KeyError, ValueError, TypeError, IndexError) as exc:
                raise DataError(f"{where}: not a multiple-choice row ({exc}); see persist.probes.mc_sets for the "
                                "layouts read") from None
        if not items:
            raise DataError(f"mc:{self.source}: no items")
        return items


SUITE_FORMATS.add("mc", MultipleChoiceSuite)
