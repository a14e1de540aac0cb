"""Records are written atomically and can be verified: a truncated or edited record is named, never trusted."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from record.errors import RecordError
from record.schema import Header, Measurements, Sample, compose, to_json
from record.storage import checksum, read_record, record_path, record_status, write_json_atomic, write_record


def _record(level: float = 30.0, status: str = "complete"):
    config = {"model": {"model_name": "tiny", "pruning": {"level": level}}}
    quality = Measurements("quality")
    quality.add_sample((0, 0), "reference_perplexity", float("nan"))
    diversity = Measurements("diversity")
    diversity.add_sample((0, 0), "distinct_1", 0.75)
    return compose(
        Header(f"tiny_L{level:g}", "0" * 64, config, {}, {}),
        [Sample(0, 0, 123, "the cat", "sat", 2)],
        [quality, diversity],
        status,
    )


def test_written_record_reads_back_equal_with_a_matching_checksum(tmp_path: Path) -> None:
    record = _record()
    path = write_record(record_path(tmp_path, record.condition_id), record)
    payload = json.loads(path.read_text())
    assert payload["checksum"] == checksum(to_json(record))
    assert read_record(path) == record
    # a non-finite value is a failure in the record, never a number (contract 6)
    assert read_record(path).samples[0].failures["reference_perplexity"].startswith("non-finite")
    assert "reference_perplexity" not in read_record(path).samples[0].metrics


def test_hand_edited_record_is_refused_by_name(tmp_path: Path) -> None:
    path = write_record(tmp_path / "records" / "a.json", _record())
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
    path.write_text(text[:cut])
    with pytest.raises(RecordError) as info:
        read_record(path)
    assert str(path) in str(info.value)


def test_record_without_checksum_or_with_unknown_fields_is_refused(tmp_path: Path) -> None:
    path = write_record(tmp_path / "c.json", _record())
    payload = json.loads(path.read_text())
    no_checksum = dict(payload)
    del no_checksum["checksum"]
    (tmp_path / "d.json").write_text(json.dumps(no_checksum))
    with pytest.raises(RecordError, match="no checksum"):
        read_record(tmp_path / "d.json")
    extra = {k: v for k, v in payload.items() if k != "checksum"}
    extra["spread_in"] = {"free": "form"}  # nothing outside the schema, even with a valid checksum
    (tmp_path / "e.json").write_text(json.dumps({**extra, "checksum": checksum(extra)}))
    with pytest.raises(RecordError, match="spread_in"):
        read_record(tmp_path / "e.json")


def test_record_status_reads_only_intact_records(tmp_path: Path) -> None:
    good = write_record(tmp_path / "g.json", _record(status="incomplete"))
    assert record_status(good) == "incomplete"
    assert record_status(tmp_path / "missing.json") is None
    good.write_text("{")
    assert record_status(good) is None


def test_atomic_write_leaves_no_temporary_and_ordinary_permissions(tmp_path: Path) -> None:
    path = write_json_atomic(tmp_path / "x" / "y.json", {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in path.parent.iterdir()] == ["y.json"]
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = write_json_atomic(tmp_path / "z.json", {"old": True})
    with pytest.raises(ValueError):
        write_json_atomic(path, {"bad": float("nan")})  # strict JSON refuses NaN before anything is replaced
    assert json.loads(path.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["z.json"]
