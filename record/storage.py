"""Writing and reading records: atomic, checksummed, validated against the schema.

Records are written atomically (temporary file, fsync, rename), so a reader
sees the old file or the new one, never half of one. The checksum (sha256 of the
canonical JSON without itself) makes a record that was truncated or edited after
it was written detectable, so that ``report`` and ``--resume`` name it instead
of trusting it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from record.errors import RecordError
from record.schema import ConditionRecord, from_json, to_json

DEFAULT_ROOT = Path("validation_results") / "pruning_agency"


def default_run_dir() -> Path:
    """``validation_results/pruning_agency/run_<timestamp>`` under the current directory."""
    return DEFAULT_ROOT / f"run_{datetime.now().strftime('%Y%m%d_%H%M%S')}"


def record_path(run_dir: str | Path, condition_id: str) -> Path:
    return Path(run_dir) / "records" / f"{condition_id}.json"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Temporary file in the same folder, fsync, rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes owner-only files; results are ordinary files
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, payload: Any) -> Path:
    return write_text_atomic(path, json.dumps(payload, indent=1, allow_nan=False, sort_keys=True) + "\n")


def checksum(payload: dict[str, Any]) -> str:
    """sha256 of the canonical JSON (sorted keys, no whitespace) of everything but ``checksum``."""
    body = {k: v for k, v in payload.items() if k != "checksum"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_record(path: str | os.PathLike, record: ConditionRecord) -> Path:
    """Write one record atomically, with its checksum."""
    payload = to_json(record)
    return write_json_atomic(path, {**payload, "checksum": checksum(payload)})


def read_record(path: str | os.PathLike) -> ConditionRecord:
    """Read and validate one record; ``RecordError`` names the file and why it cannot be trusted."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RecordError(f"record {path} cannot be read ({error})") from None
    if not isinstance(payload, dict) or "checksum" not in payload:
        raise RecordError(f"record {path} has no checksum; it was not written by this harness")
    if payload["checksum"] != checksum(payload):
        raise RecordError(
            f"record {path} does not match its checksum (edited or damaged after it was written)"
        )
    return from_json(payload, f"record {path}")


def record_status(path: str | os.PathLike) -> str | None:
    """The status of an intact record, or None when there is none or it cannot be trusted."""
    try:
        return read_record(path).status if Path(path).is_file() else None
    except RecordError:
        return None
