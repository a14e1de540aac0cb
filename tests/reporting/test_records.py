"""Loading: truncated, duplicated and unfinished records are named, never dropped silently or counted twice."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from callbacks.record import write_json_atomic
from reporting_synthetic import config_of, default_metrics, make_record, write_grid

from reporting.cells import Cell
from reporting.records import load_records
from reporting.statistics import compute_statistics


def test_truncated_record_is_reported_by_name_and_not_counted(tmp_path: Path) -> None:
    paths = write_grid(tmp_path / "run", temperatures=(0.7,), levels=(0, 50))
    broken = paths[0]
    broken.write_text(broken.read_text()[:200])  # cut mid-file, as a crash would
    loaded = load_records([tmp_path / "run"])
    assert len(loaded.records) == len(paths) - 1
    assert len(loaded.problems) == 1 and broken.name in loaded.problems[0]
    stats = compute_statistics(loaded.records)
    assert len(stats.cells) == len(paths) - 1  # the broken condition's cell is absent, not empty or invented
    assert all(c.n_records == 1 and c.sample["reference_perplexity"].n == 30 for c in stats.cells)


def test_hand_edited_record_of_another_schema_is_reported(tmp_path: Path) -> None:
    paths = write_grid(tmp_path / "run", temperatures=(0.7,), levels=(0,))
    payload = json.loads(paths[0].read_text())
    payload["schema_version"] = 99
    paths[0].write_text(json.dumps(payload))
    loaded = load_records([tmp_path / "run"])
    assert any(paths[0].name in p for p in loaded.problems)
    assert len(loaded.records) == len(paths) - 1


def test_duplicate_across_run_dirs_is_kept_once_and_reported(tmp_path: Path) -> None:
    paths = write_grid(tmp_path / "run1", temperatures=(0.7,), levels=(0,), arms=(False,))
    copy = tmp_path / "run2" / "records" / "again" / paths[0].name
    copy.parent.mkdir(parents=True)
    shutil.copy(paths[0], copy)
    loaded = load_records([tmp_path / "run1", tmp_path / "run2"])
    assert len(loaded.records) == 1
    assert (
        len(loaded.problems) == 1 and "duplicates" in loaded.problems[0] and str(copy) in loaded.problems[0]
    )
    stats = compute_statistics(loaded.records)
    assert stats.cell(Cell("gpt2", "entropy", 0.7, 0.0, False)).sample["reference_perplexity"].n == 30


def test_incomplete_record_is_reported_and_excluded(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    record = make_record(config_of(30, False), rng, default_metrics(), status="incomplete")
    path = write_json_atomic(tmp_path / "run" / "records" / "partial.json", record)
    loaded = load_records([tmp_path / "run"])
    assert loaded.records == []
    assert loaded.problems == [f"record {path} has status 'incomplete'; excluded"]


def test_missing_records_folder_is_a_problem(tmp_path: Path) -> None:
    loaded = load_records([tmp_path / "nowhere"])
    assert loaded.records == [] and "no records/ folder" in loaded.problems[0]
