"""Writes the condition's record: locally always (atomically), to W&B when it can.

It must come after every measuring callback (the CLI orders it last), because
it serialises what they recorded in their ``on_predict_end``. A W&B failure is
reported once as a warning and never stops the local record (contract 7). A
condition that does not finish still leaves a record that says so: ``status:
incomplete`` when it was interrupted (Ctrl-C, SIGTERM), ``status: failed`` with
the error when it raised; ``report`` names and excludes both and ``--resume``
runs them again. A complete record is never overwritten by an unfinished one.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning as L

from callbacks.record import (
    ConditionRecord,
    RecordError,
    condition_id,
    data_fields,
    default_run_dir,
    read_record,
    record_path,
    write_record,
)

WANDB_ERRORS = ("continue", "raise")


def environment() -> dict[str, Any]:
    """Library versions, git commit and hardware: what is needed to trust or reproduce a number."""
    import lightning
    import torch
    import transformers

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    cuda = torch.cuda.is_available()
    return {
        "python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__,
        "lightning": lightning.__version__, "git_commit": commit, "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(), "cpu_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name(0) if cuda else None,
        "timestamp": datetime.now(timezone.utc).isoformat(),
    }


class RecordWriter(L.Callback):
    """Local JSON record per condition, and the same numbers as the W&B run's config and summary.

    Args:
        output_dir: run folder; records go to ``<output_dir>/records/``. Default:
            ``validation_results/pruning_agency/run_<timestamp>``.
        quiet: print only one line per condition.
        wandb_errors: ``continue`` (warn once, keep the local record) or ``raise``.
    """

    def __init__(self, output_dir: str | None = None, quiet: bool = False, wandb_errors: str = "continue") -> None:
        self.output_dir = Path(output_dir) if output_dir else default_run_dir()
        self.quiet = quiet
        self.wandb_errors = wandb_errors
        self.written: Path | None = None
        self._complete: set[str] = set()  # condition ids this writer recorded as complete

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        record = pl_module.record  # created by the module's setup, which runs after callbacks' setup
        if trainer.datamodule is not None:
            record.config.update(data_fields(trainer.datamodule))
        record.config["device"] = str(trainer.strategy.root_device)
        record.condition_id = condition_id(record.config)
        record.environment = environment()
        record.extra["output_dir"] = str(self.output_dir)
        record.extra["outputs_path"] = str(self.output_dir / "outputs" / f"{record.condition_id}.txt")

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        payload = pl_module.record.to_dict(status="complete")
        if not Path(payload.get("outputs_path", "")).is_file():
            payload.pop("outputs_path", None)  # outputs were not saved for this condition
        self.written = write_record(record_path(self.output_dir, payload["condition_id"]), payload)
        self._complete.add(payload["condition_id"])
        self._log_to_wandb(trainer, payload)
        self._print_summary(payload)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        """Leave a record that says the condition did not finish, and why; never raise from here."""
        try:
            self._write_unfinished(trainer, pl_module, exception)
        except Exception as error:  # the original exception is what the user must see
            print(f"warning: the unfinished condition could not be recorded ({type(error).__name__}: {error})",
                  file=sys.stderr)

    def _write_unfinished(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        status = "incomplete" if isinstance(exception, KeyboardInterrupt) else "failed"
        record = getattr(pl_module, "record", None)
        if record is None or not record.condition_id:
            record = self._bare_record(trainer, pl_module)  # failed before predicting (setup, model load)
            if record is None:
                return
        if record.condition_id in self._complete:
            return  # e.g. W&B failed after the complete record was written: that record stands
        path = record_path(self.output_dir, record.condition_id)
        if _is_complete(path):
            print(f"warning: {path} stays as it is (complete, from an earlier run); this run was {status}",
                  file=sys.stderr)
            return
        error = "interrupted" if status == "incomplete" else "raised"
        record.add_failure("condition", f"{error}: {type(exception).__name__}: {exception}".rstrip(": "))
        self.written = write_record(path, record.to_dict(status=status))

    def _bare_record(self, trainer: L.Trainer, pl_module: L.LightningModule) -> ConditionRecord | None:
        summary = getattr(pl_module, "condition_summary", None)
        if summary is None:
            return None
        config = summary()
        if trainer.datamodule is not None:
            config.update(data_fields(trainer.datamodule))
        config["device"] = str(trainer.strategy.root_device)
        record = ConditionRecord(condition_id=condition_id(config), config=config, environment=environment())
        record.extra["output_dir"] = str(self.output_dir)
        return record

    def _log_to_wandb(self, trainer: L.Trainer, payload: dict[str, Any]) -> None:
        from lightning.pytorch.loggers import WandbLogger

        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        for logger in loggers:
            try:
                run = logger.experiment
                run.name = payload["condition_id"]
                run.config.update(payload["config"], allow_val_change=True)
                run.summary.update(wandb_summary(payload))
            except Exception as error:  # W&B must never cost the local record
                if self.wandb_errors == "raise":
                    raise
                print(f"warning: W&B logging failed ({type(error).__name__}: {error}); "
                      f"the local record {self.written} is complete", file=sys.stderr)

    def _print_summary(self, payload: dict[str, Any]) -> None:
        agg, cond, cfg = payload["aggregates"], payload["condition_metrics"], payload["config"]

        def fmt(value: float | None) -> str:
            return "failed" if value is None else f"{value:.4g}"

        def mean(name: str) -> str:
            return fmt(agg.get(name, {}).get("mean"))

        failed = sum(1 for s in payload["samples"] if s["failures"])
        line = (f"[{'agency' if cfg['agency'] else 'baseline'}] {cfg['model']} {cfg['pruning_method']} "
                f"{cfg['pruning_level']:g}% T={cfg['temperature']:g}: {mean('tokens_per_second')} tok/s, "
                f"first token {mean('first_token_latency_s')} s, ref ppl {mean('reference_perplexity')}, "
                f"corpus ppl {fmt(cond.get('corpus_perplexity'))}, "
                f"distinct-2 {mean('distinct_2')}, samples {len(payload['samples'])} ({failed} with failures) "
                f"-> {self.written}")
        print(line, flush=True)


def _is_complete(path: Path) -> bool:
    try:
        return path.is_file() and read_record(path)["status"] == "complete"
    except RecordError:
        return False


def wandb_summary(payload: dict[str, Any]) -> dict[str, Any]:
    """Flat summary: per-sample metric means (and std, n) plus condition metrics and agency counts."""
    summary: dict[str, Any] = {}
    for name, stats in payload["aggregates"].items():
        for key in ("mean", "std", "n", "n_failed"):
            if stats.get(key) is not None:
                summary[f"{name}/{key}" if key != "mean" else name] = stats[key]
    summary.update(payload["condition_metrics"])
    summary["pruned_heads_count"] = len(payload["pruned_heads"])
    agency = payload.get("agency")
    if agency:
        for state, count in agency.get("state_counts_end", {}).items():
            summary[f"agency/end_{state}"] = count
        for state, count in agency.get("state_counts_mean", {}).items():
            summary[f"agency/mean_{state}"] = count
        for kind, count in agency.get("violations", {}).items():
            summary[f"agency/violations_{kind}"] = count
        summary["agency/withholding_consent"] = agency.get("withholding_consent")
    return summary
