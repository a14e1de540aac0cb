"""Loading result records from run folders, with every rejected file named.

A report is only as honest as its inputs: a truncated, edited, duplicated or
unfinished record must neither vanish silently nor be counted twice, so each
becomes a line in ``problems`` that travels with the loaded records. The keys a
run folder's ``sweep.yaml`` varied are collected too: they are factors the
report compares, never settings it pools over.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from record.errors import RecordError
from record.schema import ConditionRecord
from record.storage import read_record


@dataclass
class LoadedRecords:
    """The records that can be used, and why each other file was not."""

    records: list[ConditionRecord] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    unreadable: list[Path] = field(default_factory=list)
    sources: dict[str, Path] = field(default_factory=dict)  # condition_id -> file it came from
    swept_keys: set[str] = field(default_factory=set)  # config keys a sweep file of these folders varied
    files: int = 0


def record_files(run_dir: Path) -> list[Path]:
    """Every JSON file under ``<run_dir>/records``, in a stable order."""
    return sorted(p for p in (Path(run_dir) / "records").rglob("*.json") if p.is_file())


def swept_keys(run_dir: Path) -> set[str]:
    """The config keys the run folder's sweep file varied (more than one value, or a random distribution)."""
    path = Path(run_dir) / "sweep.yaml"
    try:
        parameters = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("parameters") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return set()
    keys = set()
    for key, spec in parameters.items():
        if isinstance(spec, dict) and ("value" not in spec) and len(spec.get("values") or [None, None]) > 1:
            keys.add(str(key))
    return keys


def load_records(run_dirs: Iterable[str | Path]) -> LoadedRecords:
    """Read the records of all run folders; the first file of a condition id wins."""
    loaded = LoadedRecords()
    for run_dir in map(Path, run_dirs):
        if not (run_dir / "records").is_dir():
            loaded.problems.append(f"run folder {run_dir} has no records/ folder")
            continue
        loaded.swept_keys |= swept_keys(run_dir)
        for path in record_files(run_dir):
            loaded.files += 1
            try:
                record = read_record(path)
            except RecordError as error:
                loaded.unreadable.append(path)
                loaded.problems.append(f"{error}; excluded")
                continue
            if record.status != "complete":
                loaded.problems.append(f"record {path} has status '{record.status}'; excluded")
                continue
            if record.condition_id in loaded.sources:
                loaded.problems.append(
                    f"record {path} duplicates condition {record.condition_id} already loaded "
                    f"from {loaded.sources[record.condition_id]}; kept the first"
                )
                continue
            loaded.sources[record.condition_id] = path
            loaded.records.append(record)
    return loaded
