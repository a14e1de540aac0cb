"""The generated texts, readable: a text file per condition and a W&B table.

Numbers say that quality changed; reading the continuations says how. The
writer reads the composed record (``RecordWriter`` hands it over), so it shows
every sample's metrics and failures whatever the order of the callbacks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import WandbLogger

from record.schema import ConditionRecord
from record.storage import write_text_atomic

TABLE_KEY = "outputs"
BASE_COLUMNS = ("prompt_index", "iteration", "seed", "prompt", "continuation")
FAILURES_COLUMN = "failures"


def metric_columns(record: ConditionRecord) -> list[str]:
    """Every per-sample metric that at least one sample has a value for, sorted."""
    return sorted({n for s in record.samples for n in s.metrics})


def format_outputs(record: ConditionRecord) -> str:
    """All samples of the record as plain text, in (prompt_index, iteration) order."""
    lines = [f"# condition {record.condition_id}"]
    lines += [f"# {key}: {value}" for key, value in _flat(record.config)]
    for sample in record.samples:
        lines += [
            "",
            f"=== prompt_index={sample.prompt_index} iteration={sample.iteration} seed={sample.seed}",
            "--- prompt",
            sample.prompt,
            "--- continuation",
            sample.continuation,
            "--- metrics",
            *(f"{name} = {value:.6g}" for name, value in sorted(sample.metrics.items())),
        ]
        if sample.failures:
            lines += [
                "--- failures",
                *(f"{name}: {error}" for name, error in sorted(sample.failures.items())),
            ]
    return "\n".join(lines) + "\n"


def _flat(config: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items = []
    for key, value in sorted(config.items()):
        if isinstance(value, dict) and value:
            items += _flat(value, f"{prefix}{key}.")
        else:
            items.append((f"{prefix}{key}", value))
    return items


def table_rows(record: ConditionRecord, columns: list[str]) -> list[list[Any]]:
    """One row per sample: base columns, ``columns`` (None where the sample failed or lacks the metric,
    never a number), then the sample's failures as ``name: error; ...``."""
    rows = []
    for sample in record.samples:
        failures = "; ".join(f"{name}: {error}" for name, error in sorted(sample.failures.items()))
        rows.append(
            [getattr(sample, c) for c in BASE_COLUMNS] + [sample.metrics.get(c) for c in columns] + [failures]
        )
    return rows


class OutputWriter(L.Callback):
    """Writes every sample (prompt, continuation, seed, per-sample metrics and failures) to
    ``<run folder>/outputs/<condition id>.txt`` and logs them as the W&B table ``outputs``.

    Args:
        enabled: write the text file and log the table (off by default: text files grow with the grid).
    """

    def __init__(self, enabled: bool = False) -> None:
        super().__init__()
        self.enabled = bool(enabled)
        self.last_path: Path | None = None

    def consume(self, record: ConditionRecord, trainer: L.Trainer, run_dir: Path) -> Path | None:
        """Write the texts of a composed record; return the file written (None when disabled)."""
        if not self.enabled:
            return None
        self.last_path = write_text_atomic(
            run_dir / "outputs" / f"{record.condition_id}.txt", format_outputs(record)
        )
        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if loggers:
            metrics = metric_columns(record)
            columns = [*BASE_COLUMNS, *metrics, FAILURES_COLUMN]
            for logger in loggers:
                logger.log_table(key=TABLE_KEY, columns=columns, data=table_rows(record, metrics))
        return self.last_path
