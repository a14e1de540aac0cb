"""The generated texts, readable: a text file per condition and a W&B table.

Numbers say that quality changed; reading the continuations says how. The
writer reads everything, metrics included, from the condition's record, so it
must come *after* every measuring callback in the callback list: Lightning
runs ``on_predict_end`` hooks in list order, and the condition-level and
late per-sample values only exist once those hooks ran.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_warn

from callbacks.common import error_text
from callbacks.record import ConditionRecord

OUTPUTS_FILE = "outputs_file"
OUTPUTS_TABLE = "outputs_table"
TABLE_KEY = "outputs"
BASE_COLUMNS = ("prompt_index", "iteration", "seed", "prompt", "continuation")
FAILURES_COLUMN = "failures"


def outputs_path(record: ConditionRecord, default_root_dir: str | os.PathLike) -> Path:
    """Where this condition's text goes.

    ``record.extra["outputs_path"]`` (set by the record writer) wins; otherwise
    ``<record.extra["output_dir"] or default_root_dir>/outputs/<condition_id or "condition">.txt``.
    """
    if record.extra.get("outputs_path"):
        return Path(record.extra["outputs_path"])
    root = record.extra.get("output_dir") or default_root_dir
    return Path(root) / "outputs" / f"{record.condition_id or 'condition'}.txt"


def metric_columns(record: ConditionRecord) -> list[str]:
    """Every per-sample metric that at least one sample has a value for, sorted.

    Names that only ever failed (``generation``, or a metric that failed everywhere)
    appear in the table's ``failures`` column instead of as an all-empty column.
    """
    return sorted({n for s in record.samples.values() for n in s["metrics"]})


def _value_text(value: float) -> str:
    return f"{value:.6g}"


def format_outputs(record: ConditionRecord) -> str:
    """All samples of the record as plain text, in (prompt_index, iteration) order."""
    lines = [f"# condition {record.condition_id or '(no id)'}"]
    lines += [f"# {name}: {value}" for name, value in sorted(record.config.items())]
    for key in sorted(record.samples):
        sample = record.samples[key]
        lines += [
            "",
            f"=== prompt_index={sample['prompt_index']} iteration={sample['iteration']} seed={sample['seed']}",
            "--- prompt",
            sample["prompt"],
            "--- continuation",
            sample["continuation"],
            "--- metrics",
            *(f"{name} = {_value_text(value)}" for name, value in sorted(sample["metrics"].items())),
        ]
        if sample["failures"]:
            lines += ["--- failures", *(f"{name}: {error}" for name, error in sorted(sample["failures"].items()))]
    return "\n".join(lines) + "\n"


def write_text_atomic(path: Path, text: str) -> Path:
    """Temporary file then rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def table_rows(record: ConditionRecord, columns: list[str]) -> list[list[Any]]:
    """One row per sample: base columns, ``columns`` (None where the sample failed or lacks the
    metric, never a number), then the sample's failures as ``name: error; ...``."""
    rows = []
    for key in sorted(record.samples):
        sample = record.samples[key]
        failures = "; ".join(f"{name}: {error}" for name, error in sorted(sample["failures"].items()))
        rows.append([sample[c] for c in BASE_COLUMNS] + [sample["metrics"].get(c) for c in columns] + [failures])
    return rows


class OutputWriter(L.Callback):
    """Writes every sample (prompt index, iteration, seed, prompt, continuation, per-sample metrics
    and failures) to a text file, and logs them as the W&B table ``outputs`` when a WandbLogger is used.

    Place it after all measuring callbacks in the callback list: it reads their
    metrics from the record in ``on_predict_end`` (``setup`` warns when one of this
    package's measuring callbacks comes after it). A record writer that should
    save this callback's own failures (``outputs_file``, ``outputs_table``) goes
    after it. The path written is ``last_path``.

    Args:
        enabled: write the text file and log the table.
    """

    def __init__(self, enabled: bool = False) -> None:
        super().__init__()
        self.enabled = enabled
        self.last_path: Path | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not self.enabled or self not in trainer.callbacks:
            return
        from callbacks.agency_report import AgencyReporter
        from callbacks.diversity import DiversityMonitor
        from callbacks.memory import MemoryMonitor
        from callbacks.quality import QualityMonitor
        from callbacks.speed import SpeedMonitor

        measuring = (SpeedMonitor, MemoryMonitor, QualityMonitor, DiversityMonitor, AgencyReporter)
        later = trainer.callbacks[trainer.callbacks.index(self) + 1 :]
        late = [type(cb).__name__ for cb in later if isinstance(cb, measuring)]
        if late:
            rank_zero_warn(f"OutputWriter runs before {', '.join(late)}: their on_predict_end values will be "
                           f"missing from the written outputs; place OutputWriter last in the callback list")

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled:
            return
        record = pl_module.record
        try:
            path = outputs_path(record, trainer.default_root_dir)
            self.last_path = write_text_atomic(path, format_outputs(record))
        except Exception as error:
            record.add_failure(OUTPUTS_FILE, error_text(error))
        wandb_loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if not wandb_loggers:
            return
        try:
            metrics = metric_columns(record)
            columns = [*BASE_COLUMNS, *metrics, FAILURES_COLUMN]
            data = table_rows(record, metrics)
            for logger in wandb_loggers:
                logger.log_table(key=TABLE_KEY, columns=columns, data=data)
        except Exception as error:
            record.add_failure(OUTPUTS_TABLE, error_text(error))
