"""Loading records: every file that cannot be used is named in ``problems``, none is counted twice."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from synthetic import Grid, build_records, write_records, write_run, write_sweep

from reporting.records import load_records, record_files, swept_keys

SMALL = Grid(levels=(0.0, 30.0), temperatures=(0.7,), prompts=6, repeats=3, layers=4, heads=6)


@pytest.fixture
def run(tmp_path: Path) -> Path:
    write_run(tmp_path / "run", SMALL)
    return tmp_path / "run"


def test_a_clean_run_loads_every_record_with_its_source(run: Path) -> None:
    loaded = load_records([run])
    assert len(loaded.records) == 4 == loaded.files and loaded.problems == [] and loaded.unreadable == []
    assert {r.condition_id for r in loaded.records} == set(loaded.sources)
    assert all(
        loaded.sources[r.condition_id] == run / "records" / f"{r.condition_id}.json" for r in loaded.records
    )
    assert loaded.swept_keys == {"model.pruning.level", "model.agency.enabled"}  # one temperature: not swept


def test_truncated_edited_and_foreign_files_are_named_and_excluded(run: Path) -> None:
    files = record_files(run)
    truncated, edited, foreign = files[0], files[1], files[2]
    truncated.write_text(truncated.read_text()[:500])
    payload = json.loads(edited.read_text())
    payload["samples"][0]["metrics"]["reference_perplexity"] = 1.0  # a better number, typed in by hand
    edited.write_text(json.dumps(payload))
    payload = json.loads(foreign.read_text())
    del payload["checksum"]
    foreign.write_text(json.dumps(payload))
    loaded = load_records([run])
    assert len(loaded.records) == 1 and loaded.files == 4
    assert loaded.unreadable == [truncated, edited, foreign]
    assert len(loaded.problems) == 3
    by_file = {
        path: next(p for p in loaded.problems if str(path) in p) for path in (truncated, edited, foreign)
    }
    assert "cannot be read" in by_file[truncated]
    assert "checksum" in by_file[edited] and "edited" in by_file[edited]
    assert "no checksum" in by_file[foreign]
    assert all(p.endswith("excluded") for p in loaded.problems)


def test_incomplete_and_failed_records_are_named_but_not_unreadable(tmp_path: Path) -> None:
    records = build_records(SMALL)
    records[0] = dataclasses.replace(records[0], status="incomplete")
    records[1] = dataclasses.replace(records[1], status="failed")
    paths = write_records(tmp_path / "run", records)
    loaded = load_records([tmp_path / "run"])
    assert len(loaded.records) == 2 and loaded.unreadable == []
    assert f"record {paths[0]} has status 'incomplete'; excluded" in loaded.problems
    assert f"record {paths[1]} has status 'failed'; excluded" in loaded.problems


def test_a_condition_found_twice_is_counted_once_and_the_copy_is_named(run: Path, tmp_path: Path) -> None:
    original = record_files(run)[0]
    shutil.copy(original, run / "records" / "copy.json")  # same condition under another name, same folder
    other = tmp_path / "other"
    write_run(other, SMALL)  # the same grid written again elsewhere (e.g. from another machine)
    loaded = load_records([run, other])
    assert len(loaded.records) == 4 and loaded.files == 9
    duplicates = [p for p in loaded.problems if "duplicates condition" in p]
    assert len(duplicates) == 5
    assert any(str(run / "records" / "copy.json") in p and str(original) in p for p in duplicates)
    assert all(path.parent.parent == run for path in loaded.sources.values())  # the first file wins


def test_a_folder_without_records_is_a_problem_not_a_crash(tmp_path: Path, run: Path) -> None:
    (tmp_path / "empty").mkdir()
    loaded = load_records([tmp_path / "empty", run])
    assert len(loaded.records) == 4
    assert loaded.problems == [f"run folder {tmp_path / 'empty'} has no records/ folder"]


def test_swept_keys_are_those_with_several_values_or_a_distribution(tmp_path: Path) -> None:
    write_sweep(
        tmp_path,
        {
            "model.pruning.level": {"values": [0, 30]},
            "model.pruning.method": {"value": "entropy"},
            "model.pruning.mode": {"values": ["mask"]},
            "model.agency.overload_margin": {"distribution": "uniform", "min": 0.0, "max": 0.1},
        },
    )
    assert swept_keys(tmp_path) == {"model.pruning.level", "model.agency.overload_margin"}
    assert swept_keys(tmp_path / "nowhere") == set()
    (tmp_path / "sweep.yaml").write_text("parameters: [unclosed")
    assert swept_keys(tmp_path) == set()
