"""Print pins of the statistics stack at the lowest versions pyproject.toml allows ('numpy==X scipy==Y'), for
`make test-lowest`: the lower bounds are read, not copied, so the job tests what pyproject promises."""

from __future__ import annotations

import re
import sys
from pathlib import Path

STACK = ("numpy", "scipy")


def pins(pyproject: Path) -> list[str]:
    # the dependency strings of [project] dependencies, read with a pattern (tomllib is not in Python 3.10)
    text = pyproject.read_text()
    out = []
    for name in STACK:
        low = re.search(rf'^\s*"{name}\s*>=\s*([0-9][0-9.]*)', text, re.MULTILINE)
        if low is None:
            sys.exit(f"{pyproject}: dependency {name!r} needs a '>=' lower bound for the lowest-versions job")
        out.append(f"{name}=={low.group(1)}")
    return out


if __name__ == "__main__":
    print(" ".join(pins(Path(__file__).resolve().parents[1] / "pyproject.toml")))
