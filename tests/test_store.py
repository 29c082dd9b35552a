"""Run store: resume, torn lines, config mismatch, run-name sanitising."""

from __future__ import annotations

import json

import pytest

from persist.api import Record
from persist.errors import ConfigError, ResumeMismatchError
from persist.store import RunStore, record_key


def record(key: str, score: float) -> Record:
    return Record(key=key, role="model", model="m", suite="s", suite_version="v", item_id=key, trait="t", domain="d",
                  condition="clean", attack="clean", attack_version="0", attack_params={}, attack_index=0,
                  score=score, details={})


def test_resume_skips_done_and_drops_torn_line(tmp_path):
    store = RunStore.open(tmp_path / "r", {"a": 1})
    store.append([record("k1", 1.0), record("k2", 0.0)])
    with store.records_path.open("a") as f:
        f.write('{"key": "k3", "role": "mo')  # a kill mid-write
    again = RunStore.open(tmp_path / "r", {"a": 1})
    assert again.done("model") == {"k1", "k2"}
    assert again.records_path.read_text().endswith("}\n")
    again.append([record("k3", 0.5)])
    assert [r.key for r in again.records()] == ["k1", "k2", "k3"]


def test_config_mismatch_lists_fields(tmp_path):
    RunStore.open(tmp_path / "r", {"model": "a", "limit": 10, "suite": "traits"})
    with pytest.raises(ResumeMismatchError, match=r"limit: 10 -> 20.*model: 'a' -> 'b'"):
        RunStore.open(tmp_path / "r", {"model": "b", "limit": 20, "suite": "traits"})


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".hidden", "x" * 200])
def test_run_names_cannot_escape(tmp_path, name):
    with pytest.raises(ConfigError):
        RunStore.folder_for(tmp_path, name)


def test_record_key_is_stable_and_model_free():
    k1 = record_key(suite="s", item="i", condition="clean", params={"b": 1, "a": 2})
    k2 = record_key(params={"a": 2, "b": 1}, condition="clean", item="i", suite="s")
    assert k1 == k2 and len(k1) == 24


def test_header_written_once(tmp_path):
    store = RunStore.open(tmp_path / "r", {"a": 1}, argv=["persist", "x"])
    h = json.loads(store.header_path.read_text())
    assert h["argv"] == ["persist", "x"] and h["schema_version"] == 1 and "torch" in h["versions"]


def test_a_line_that_is_not_a_record_is_named_by_file_and_line(tmp_path):
    from persist.errors import DataError

    store = RunStore.open(tmp_path / "r", {"a": 1})
    store.append([record("k1", 1.0)])
    with store.records_path.open("a") as f:
        f.write('{"key": "k2", "role": "model", "score": 0.5}\n')  # an older or hand-made line: fields missing
    with pytest.raises(DataError, match=r"records\.jsonl:2: not a record of this persist version \(record is "
                                        r"missing field 'model'\)"):
        list(store.records())
