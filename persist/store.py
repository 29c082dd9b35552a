"""A run folder: the only place persist writes.

    runs/<name>/header.json     what was run: argv, resolved config + hash, models, versions
    runs/<name>/records.jsonl   one scored unit per line; appended, flushed and fsynced per batch

Re-running the same command resumes: records already present (by key and model role) are skipped. A torn last
line (a kill mid-write) is dropped on open. A different configuration raises ResumeMismatchError listing the
fields that differ.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from persist import failpoints
from persist.api import Record
from persist.errors import ConfigError, DataError, ResumeMismatchError, RunWriteError
from persist.jsonl import stable_hash

SCHEMA_VERSION = 1
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def record_key(**parts: Any) -> str:
    """The identity of a scored unit. It leaves out the model, so runs of different models join on it."""
    return stable_hash(parts, 24)


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in ("persist", "torch", "transformers", "peft", "accelerate", "datasets", "garak"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder and rename: readers never see half a file.

    The temporary file is created with mode 0666 minus the umask, like any file the user writes (mkstemp would
    make it 0600 and the rename would keep that, so a report folder shared with a group would be unreadable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(path.parent / f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        failpoints.reach(f"write {path.name}")  # crash tests: the temporary file written, not yet renamed
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


class RunStore:
    """Owns one run folder. Use `open()`; then `done(role)`, `append(records)`, `records()`."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.header_path = self.folder / "header.json"
        self.records_path = self.folder / "records.jsonl"

    @staticmethod
    def folder_for(runs_dir: Path, name: str) -> Path:
        if not SAFE_NAME.match(name) or name in (".", ".."):
            raise ConfigError(f"run name {name!r}: use letters, digits, '.', '_' and '-' only (no paths)")
        return Path(runs_dir) / name

    @classmethod
    def open(cls, folder: Path, config: dict[str, Any], *, argv: list[str] | None = None,
             extra: dict[str, Any] | None = None) -> RunStore:
        """Create the run folder, or resume it if its config matches `config`."""
        store = cls(folder)
        config_hash = stable_hash(config)
        if store.header_path.exists():
            header = store.header()
            if header.get("config_hash") != config_hash:
                old, new = flatten(header.get("config", {})), flatten(config)
                diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
                shown = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:8])
                raise ResumeMismatchError(
                    f"{folder} holds a run with a different configuration ({shown}); "
                    "use another --name or delete the folder to start over")
            store._repair_tail()
            store._remove_stale_temporaries()
            return store
        try:
            store.folder.mkdir(parents=True, exist_ok=True)
            probe = store.folder / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(f"cannot write to {folder}: {exc.strerror}; choose another --runs-dir") from None
        header = {"schema_version": SCHEMA_VERSION, "argv": argv if argv is not None else sys.argv,
                  "config": config, "config_hash": config_hash, "versions": library_versions(), **(extra or {})}
        atomic_write_text(store.header_path, json.dumps(header, indent=2, sort_keys=True) + "\n")
        store.records_path.touch()
        return store

    def header(self) -> dict[str, Any]:
        return json.loads(self.header_path.read_text(encoding="utf-8"))

    def update_header(self, **fields: Any) -> None:
        header = self.header()
        header.update(fields)
        atomic_write_text(self.header_path, json.dumps(header, indent=2, sort_keys=True) + "\n")

    def _repair_tail(self) -> None:
        """Drop a torn last line left by a kill during a write."""
        if not self.records_path.exists():
            self.records_path.touch()
            return
        with self.records_path.open("rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                cut = data.rfind(b"\n") + 1
                f.truncate(cut)

    def _remove_stale_temporaries(self) -> None:
        """Temporary files of atomic_write_text left by a kill before their rename (".report.json.x1y2")."""
        for p in self.folder.glob(".*.*"):
            if p.is_file() and p.name.startswith((".header.json.", ".report.")):
                p.unlink(missing_ok=True)

    def records(self) -> Iterator[Record]:
        if not self.records_path.exists():
            return
        with self.records_path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if line.endswith("\n"):
                    try:
                        yield Record.from_dict(json.loads(line))
                    except (ValueError, TypeError, AttributeError) as exc:
                        raise DataError(f"{self.records_path}:{lineno}: not a record of this persist version "
                                        f"({exc}); rerun the job into a new --name") from None

    def done(self, role: str) -> set[str]:
        return {r.key for r in self.records() if r.role == role}

    def append(self, records: Iterable[Record]) -> None:
        lines = "".join(json.dumps(r.to_dict(), sort_keys=True, ensure_ascii=False) + "\n" for r in records)
        if not lines:
            return
        size = self.records_path.stat().st_size if self.records_path.exists() else 0
        try:
            with self.records_path.open("a", encoding="utf-8") as f:
                # Crash tests: half the batch on disk with a torn last line, then a kill or a full disk.
                kill, full = failpoints.hit("append"), failpoints.hit("enospc")
                if kill or full:
                    f.write(lines[: len(lines) // 2])
                    f.flush()
                    if kill:
                        failpoints.die()
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                f.write(lines)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            try:
                with self.records_path.open("rb+") as f:  # keep whole lines only: what was recorded stays valid
                    f.truncate(size)
            except OSError:
                pass  # the file cannot even be opened: nothing of this batch reached it
            raise RunWriteError(f"{self.records_path}: cannot append records ({exc.strerror}); what was recorded "
                                "before is kept: free space (or fix permissions) and rerun the same command to "
                                "resume") from None
