"""The result record of one condition: what every measuring callback writes into.

One record is one JSON file per condition. It holds raw per-sample values, so
that statistics are computed later from the records alone, and failures with
their error, so that no failed measurement is ever replaced by a number.

Schema (``schema_version`` 1)::

    {
      "schema_version": 1,
      "condition_id": str,            # stable hash of the condition's config (also the file name)
      "status": "complete" | "incomplete" | "failed",
                                      # incomplete: interrupted; failed: the condition raised
                                      # (its error is in failures); only complete ones are used
      "config": {flat condition keys: model, pruning_level, pruning_method,
                 prune_mode, agency, temperature, seed, num_tokens, ...},
      "environment": {...versions, git commit, hardware...},
      "model_shape": {"layers": int, "heads": int},
      "pruned_heads": [[layer, head], ...],            # this arm's pruned heads
      "samples": [
        {"prompt_index": int, "iteration": int, "seed": int,
         "prompt": str, "continuation": str,
         "metrics": {name: float},                      # finite numbers only
         "failures": {name: "error text"}}              # metric name -> why
      ],
      "condition_metrics": {name: float},              # once per condition
      "aggregates": {name: {"mean", "std", "n", "n_failed"}},
      "agency": {...} | null,
      "failures": [{"metric": str, "error": str}],     # condition-level
      "checksum": str,                                 # sha256 of the rest (see record_checksum)
    }

Records are written atomically (temporary file, fsync, rename), so a reader
sees the old file or the new one, never half of one; the checksum makes a
record that was truncated or edited by hand after writing detectable, so that
``report`` and ``--resume`` name it instead of trusting it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
SampleKey = tuple[int, int]  # (prompt_index, iteration)


class RecordError(ValueError):
    """A record file that cannot be trusted: unreadable, truncated or of another schema."""


@dataclass
class ConditionRecord:
    """Collects one condition's measurements; callbacks add, the writer serialises."""

    condition_id: str
    config: dict[str, Any]
    environment: dict[str, Any] = field(default_factory=dict)
    model_shape: dict[str, int] = field(default_factory=dict)
    pruned_heads: list[list[int]] = field(default_factory=list)
    samples: dict[SampleKey, dict[str, Any]] = field(default_factory=dict)
    condition_metrics: dict[str, float] = field(default_factory=dict)
    agency: dict[str, Any] | None = None
    failures: list[dict[str, str]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def add_sample(self, prompt_index: int, iteration: int, seed: int, prompt: str, continuation: str) -> None:
        self.samples[(prompt_index, iteration)] = {
            "prompt_index": prompt_index,
            "iteration": iteration,
            "seed": seed,
            "prompt": prompt,
            "continuation": continuation,
            "metrics": {},
            "failures": {},
        }

    def add_sample_metric(self, key: SampleKey, name: str, value: float) -> None:
        """Store a finite value; a non-finite one is stored as a failure, never as a number."""
        sample = self.samples[key]
        value = float(value)
        if math.isfinite(value):
            sample["metrics"][name] = value
        else:
            sample["failures"][name] = f"non-finite value {value}"

    def add_sample_failure(self, key: SampleKey, name: str, error: str) -> None:
        self.samples[key]["failures"][name] = error

    def add_condition_metric(self, name: str, value: float) -> None:
        value = float(value)
        if math.isfinite(value):
            self.condition_metrics[name] = value
        else:
            self.add_failure(name, f"non-finite value {value}")

    def add_failure(self, name: str, error: str) -> None:
        self.failures.append({"metric": name, "error": error})

    def aggregates(self) -> dict[str, dict[str, float]]:
        """Mean, sample standard deviation and counts of every per-sample metric."""
        names = sorted({n for s in self.samples.values() for n in (*s["metrics"], *s["failures"])})
        result = {}
        for name in names:
            values = [s["metrics"][name] for s in self.samples.values() if name in s["metrics"]]
            n_failed = sum(name in s["failures"] for s in self.samples.values())
            n = len(values)
            mean = sum(values) / n if n else None
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
            result[name] = {"mean": mean, "std": std, "n": n, "n_failed": n_failed}
        return result

    def to_dict(self, status: str = "complete") -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "condition_id": self.condition_id,
            "status": status,
            "config": self.config,
            "environment": self.environment,
            "model_shape": self.model_shape,
            "pruned_heads": self.pruned_heads,
            "samples": [self.samples[k] for k in sorted(self.samples)],
            "condition_metrics": self.condition_metrics,
            "aggregates": self.aggregates(),
            "agency": self.agency,
            "failures": self.failures,
            **self.extra,
        }


def write_json_atomic(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write to a temporary file in the same folder, fsync, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes owner-only files; records are ordinary files
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=1, allow_nan=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def record_checksum(payload: dict[str, Any]) -> str:
    """sha256 of the record's canonical JSON without its own ``checksum`` field.

    Canonical: sorted keys, no whitespace; floats survive a JSON round trip
    exactly, so the checksum of a record read back equals the one written.
    """
    body = {k: v for k, v in payload.items() if k != "checksum"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_record(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write a result record atomically, with its checksum."""
    return write_json_atomic(path, {**payload, "checksum": record_checksum(payload)})


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    """Read one record, raising RecordError naming the file when it cannot be trusted.

    A record without a checksum (written by hand or by an older version) is
    accepted on its structure alone; one whose checksum does not match was
    changed after it was written and is refused.
    """
    path = Path(path)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RecordError(f"record {path} cannot be read: {error}") from None
    if not isinstance(payload, dict) or payload.get("schema_version") != SCHEMA_VERSION:
        raise RecordError(f"record {path} is not a schema-{SCHEMA_VERSION} result record")
    for key in ("condition_id", "config", "samples", "status"):
        if key not in payload:
            raise RecordError(f"record {path} is missing '{key}'")
    if "checksum" in payload and payload["checksum"] != record_checksum(payload):
        raise RecordError(f"record {path} does not match its checksum (edited or damaged after it was written)")
    return payload


DEFAULT_ROOT = Path("validation_results") / "pruning_agency"
# Keys that identify a condition; everything else in the config is how it was run.
IDENTITY_KEYS = (
    "model", "precision", "seed", "pruning_level", "pruning_method", "prune_mode", "agency", "pruning_policy",
    "temperature", "top_k", "top_p", "num_tokens", "iterations", "max_prompts", "prompt_file", "batch_size",
)


def default_run_dir() -> Path:
    return DEFAULT_ROOT / f"run_{datetime.now().strftime('%Y%m%d_%H%M%S')}"


def condition_id(config: dict[str, Any]) -> str:
    """Readable and stable: the same condition always gets the same id (what --resume matches on)."""
    identity = {k: config.get(k) for k in IDENTITY_KEYS}
    digest = hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:10]
    arm = "agency" if config.get("agency") else "baseline"
    model = str(config.get("model", "model")).replace("/", "_")
    return (f"{model}_{config.get('pruning_method')}_L{config.get('pruning_level'):g}_{arm}"
            f"_T{config.get('temperature'):g}_s{config.get('seed')}_{digest}")


def data_fields(data: Any) -> dict[str, Any]:
    """The data settings that belong to a condition's identity (from a DataModule or a namespace)."""
    return {"iterations": data.iterations, "max_prompts": data.max_prompts, "prompt_file": data.prompt_file,
            "batch_size": data.batch_size}


def record_path(run_dir: str | Path, cid: str) -> Path:
    return Path(run_dir) / "records" / f"{cid}.json"
