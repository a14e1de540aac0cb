"""Loading result records from run directories, with every rejected file named.

A report is only as honest as its inputs: a truncated, duplicated or
unfinished record must neither vanish silently nor be counted twice, so each
is turned into a human-readable problem that travels with the loaded records.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from callbacks.record import RecordError, read_record

log = logging.getLogger(__name__)

# Config keys without which a record cannot be placed in a cell.
REQUIRED_CONFIG_KEYS: tuple[str, ...] = ("model", "pruning_method", "temperature", "pruning_level", "agency")


@dataclass
class LoadedRecords:
    """The records that can be used, and why each other file was not."""

    records: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    sources: dict[str, Path] = field(default_factory=dict)  # condition_id -> file it came from


def record_files(run_dir: Path) -> list[Path]:
    """Every JSON file under ``<run_dir>/records``, in a stable order."""
    return sorted(p for p in (Path(run_dir) / "records").rglob("*.json") if p.is_file())


def _config_problem(record: dict[str, Any], path: Path) -> str | None:
    config = record.get("config")
    if not isinstance(config, dict):
        return f"record {path} has no config object; excluded"
    missing = [k for k in REQUIRED_CONFIG_KEYS if k not in config]
    if missing:
        return f"record {path} lacks config keys {missing}; excluded"
    if not isinstance(record.get("samples"), list):
        return f"record {path} has no samples list; excluded"
    return None


def load_records(run_dirs: Iterable[str | Path]) -> LoadedRecords:
    """Read the records of all run directories; the first file of a condition_id wins."""
    loaded = LoadedRecords()

    def problem(text: str) -> None:
        loaded.problems.append(text)
        log.warning(text)

    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        if not (run_dir / "records").is_dir():
            problem(f"run directory {run_dir} has no records/ folder")
            continue
        for path in record_files(run_dir):
            try:
                record = read_record(path)
            except RecordError as error:
                problem(f"{error}; excluded")
                continue
            if record["status"] != "complete":
                problem(f"record {path} has status {record['status']!r}; excluded")
                continue
            config_problem = _config_problem(record, path)
            if config_problem:
                problem(config_problem)
                continue
            condition_id = str(record["condition_id"])
            if condition_id in loaded.sources:
                problem(
                    f"record {path} duplicates condition_id {condition_id} "
                    f"already loaded from {loaded.sources[condition_id]}; kept the first"
                )
                continue
            loaded.sources[condition_id] = path
            loaded.records.append(record)
    return loaded
