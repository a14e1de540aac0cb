"""Records are written atomically and can be verified: a truncated or edited record is named, never trusted."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from callbacks.record import (
    ConditionRecord,
    RecordError,
    condition_id,
    read_record,
    record_checksum,
    record_path,
    write_json_atomic,
    write_record,
)


def _record(level: float = 30.0) -> dict:
    config = {"model": "tiny", "pruning_method": "entropy", "pruning_level": level, "agency": False,
              "temperature": 0.7, "seed": 0}
    record = ConditionRecord(condition_id=condition_id(config), config=config)
    record.add_sample(0, 0, 123, "the cat", "sat on the mat")
    record.add_sample_metric((0, 0), "distinct_1", 0.75)
    record.add_sample_metric((0, 0), "reference_perplexity", float("nan"))
    return record.to_dict()


def test_written_record_reads_back_with_a_matching_checksum(tmp_path: Path) -> None:
    payload = _record()
    path = write_record(record_path(tmp_path, payload["condition_id"]), payload)
    back = read_record(path)
    assert back["checksum"] == record_checksum(payload) == record_checksum(back)
    assert {k: v for k, v in back.items() if k != "checksum"} == json.loads(json.dumps(payload))
    # a non-finite value is a failure in the record, never a number (contract 6)
    assert back["samples"][0]["failures"]["reference_perplexity"].startswith("non-finite")


def test_hand_edited_record_is_refused_by_name(tmp_path: Path) -> None:
    payload = _record()
    path = write_record(tmp_path / "records" / "a.json", payload)
    edited = json.loads(path.read_text())
    edited["samples"][0]["metrics"]["distinct_1"] = 1.0  # a "better" number typed in by hand
    path.write_text(json.dumps(edited))
    with pytest.raises(RecordError, match="does not match its checksum") as info:
        read_record(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("cut", [0, 1, 200, -2])
def test_truncated_record_is_refused_by_name(tmp_path: Path, cut: int) -> None:
    path = write_record(tmp_path / "records" / "b.json", _record())
    text = path.read_text()
    path.write_text(text[:cut] if cut >= 0 else text[:cut])
    with pytest.raises(RecordError) as info:
        read_record(path)
    assert str(path) in str(info.value)


def test_record_without_checksum_is_checked_on_structure_only(tmp_path: Path) -> None:
    payload = _record()
    path = write_json_atomic(tmp_path / "c.json", payload)  # as older writers and test fixtures do
    assert read_record(path)["condition_id"] == payload["condition_id"]
    del payload["samples"]
    write_json_atomic(path, payload)
    with pytest.raises(RecordError, match="missing 'samples'"):
        read_record(path)


def test_atomic_write_leaves_the_old_file_when_serialising_fails(tmp_path: Path) -> None:
    path = write_json_atomic(tmp_path / "d.json", {"ok": 1})
    with pytest.raises(ValueError):
        write_json_atomic(path, {"bad": float("nan")})  # allow_nan=False refuses before the rename
    assert json.loads(path.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["d.json"]  # no temporary left behind


def test_records_are_ordinary_files_not_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = write_json_atomic(tmp_path / "e.json", {"ok": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_condition_id_is_stable_and_ignores_how_it_was_run() -> None:
    config = _record()["config"]
    assert condition_id(config) == condition_id({**config, "device": "cuda"})
    assert condition_id(config) != condition_id({**config, "pruning_level": 50.0})
