"""Publishing a folder atomically: build it beside its final place, then rename it there in one step, so a reader
(or a killed and restarted process) never sees half a model folder."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def published_folder(out: Path, prefix: str, marker: str = "config.json") -> Iterator[Path]:
    """Yield a temporary folder beside `out` to write into; on leaving, rename it to `out`. When another process
    published the same folder first (both started on an empty cache), its copy is kept: `out/marker` exists.
    The temporary folder is removed whatever happens."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=out.parent))
    try:
        yield tmp
        try:
            os.replace(tmp, out)
        except OSError:
            if not (out / marker).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
