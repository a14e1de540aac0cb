"""Composes and writes the condition's record: locally always (atomically), to W&B when it can.

A ``BasePredictionWriter``: each predict batch's samples (prompt, continuation,
seed) are kept as they come; when the run ends the writer asks every measuring
callback for its part, composes the record with the module's header
(``record.schema.compose``), hands it to the consumers (the text outputs), writes
it, and sets the W&B run's config and summary. The record does not depend on
the order of the callback list.

A W&B failure is reported once as a warning and never stops the local record. A
condition that does not finish still leaves a record that says so: ``status:
incomplete`` when it was interrupted, ``status: failed`` with the error when it
raised; ``report`` names and excludes both and ``--resume`` runs them again. A
complete record is never overwritten by an unfinished one.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter

from callbacks.base import callbacks_of, error_text, experiment_of, measuring_callbacks
from callbacks.outputs import OutputWriter
from callbacks.protocols import Experiment, Generated
from callbacks.quality import CORPUS_PERPLEXITY, EVALUATION_ONLY, SWITCHES
from callbacks.samples import generation_failure
from record.catalogue import METRICS
from record.errors import ConfigError, is_measurement_failure, require
from record.identity import flatten
from record.schema import ConditionRecord, Failure, Header, Sample, compose
from record.storage import default_run_dir, record_path, record_status, write_record

WANDB_ERRORS = ("continue", "raise")


class RecordWriter(BasePredictionWriter):
    """Local JSON record per condition, and the same numbers as the W&B run's config and summary.

    Args:
        output_dir: run folder; records go to ``<output_dir>/records/``. Default:
            ``validation_results/pruning_agency/run_<timestamp>``.
        quiet: print only one line per condition.
        wandb_errors: ``continue`` (warn, keep the local record) or ``raise``.
    """

    def __init__(
        self,
        output_dir: str | None = None,
        quiet: bool = False,
        wandb_errors: Literal["continue", "raise"] = "continue",
    ) -> None:
        super().__init__(write_interval="batch")
        require(
            wandb_errors in WANDB_ERRORS,
            "record.wandb_errors",
            wandb_errors,
            ", ".join(WANDB_ERRORS),
            "is not known",
        )
        self.output_dir = Path(output_dir) if output_dir else default_run_dir()
        self.quiet = quiet
        self.wandb_errors = wandb_errors
        self.written: Path | None = None
        self.record: ConditionRecord | None = None
        self._samples: list[Sample] = []
        self._complete: set[str] = set()

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._samples, self.record = [], None

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Generated,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        """Keep the batch's samples for the record written at the end."""
        self._samples += samples_of(prediction)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Compose every callback's part into the record, write it atomically, then log it to W&B and print its line."""
        module = experiment_of(pl_module)
        parts = [callback.result(trainer, module) for callback in measuring_callbacks(trainer)]
        record = compose(self._header(module), self._samples, parts)
        for consumer in (cb for cb in callbacks_of(trainer) if isinstance(cb, OutputWriter)):
            try:
                path = consumer.consume(record, trainer, self.output_dir)
                if path is not None:
                    record.run["outputs_file"] = str(path)
            except Exception as error:
                if not is_measurement_failure(error):
                    raise
                record.failures.append(Failure("outputs", error_text(error)))
        self.record = record
        self.written = write_record(record_path(self.output_dir, record.condition_id), record)
        self._complete.add(record.condition_id)
        self._log_to_wandb(trainer, record)
        print(summary_line(record, self.written), flush=True)

    def _header(self, module: Experiment) -> Header:
        header = module.header
        header.run = {"output_dir": str(self.output_dir)}
        return header

    # -- unfinished conditions ------------------------------------------------------------------------
    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """Leave a record that says the condition did not finish, and why; never raise from here."""
        try:
            self._write_unfinished(trainer, pl_module, exception)
        except Exception as error:  # noqa: BLE001 - the original exception is what the user must see
            print(
                f"warning: the unfinished condition could not be recorded ({error_text(error)})",
                file=sys.stderr,
            )

    def _write_unfinished(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        header = getattr(pl_module, "header", None)
        if header is None or header.condition_id in self._complete:
            return  # failed before the condition was known, or after its complete record was written
        if isinstance(exception, ConfigError):
            return  # refused in a setup: the condition never ran, and the command says why (exit 2)
        path = record_path(self.output_dir, header.condition_id)
        status = "incomplete" if isinstance(exception, KeyboardInterrupt) else "failed"
        if record_status(path) == "complete":
            print(
                f"warning: {path} stays as it is (complete, from an earlier run); this run was {status}",
                file=sys.stderr,
            )
            return
        seen = {s.key for s in self._samples}
        for batch in getattr(pl_module, "generated", []):  # a batch another callback's failure kept from us
            self._samples += [s for s in samples_of(batch) if s.key not in seen]
        happened = "interrupted" if status == "incomplete" else "raised"
        failure = Failure("condition", f"{happened}: {error_text(exception)}")
        parts = [callback.partial() for callback in measuring_callbacks(trainer)]
        record = compose(self._header(experiment_of(pl_module)), self._samples, parts, status, [failure])
        self.written = write_record(path, record)

    # -- W&B -----------------------------------------------------------------------------------------
    def _log_to_wandb(self, trainer: L.Trainer, record: ConditionRecord) -> None:
        from lightning.pytorch.loggers import WandbLogger

        for logger in (lg for lg in trainer.loggers if isinstance(lg, WandbLogger)):
            try:
                run = logger.experiment
                run.name = run_name(record)
                run.tags = tuple(sorted(set(run.tags or ()) | set(run_tags(record))))
                run.config.update(
                    {
                        **flatten(record.config),
                        **dashboard_config(record),
                        "condition_id": record.condition_id,
                    },
                    allow_val_change=True,
                )
                run.summary.update(wandb_summary(record))
            except Exception as error:  # W&B must never cost the local record
                if self.wandb_errors == "raise":
                    raise
                print(
                    f"warning: W&B logging failed ({error_text(error)}); the local record {self.written} is "
                    "complete",
                    file=sys.stderr,
                )
                continue  # one warning per failing W&B run; its artifact would fail the same way
            self._log_record_artifact(logger, record)

    def _log_record_artifact(self, logger: Any, record: ConditionRecord) -> None:
        """The record file as a ``condition-record`` artifact named by the condition, so that ``wandb sync`` and
        ``report --wandb`` carry it; the local file was written first and is never touched here."""
        if self.written is None:
            return
        try:
            import wandb

            artifact = wandb.Artifact(
                artifact_name(record.condition_id),
                type=RECORD_ARTIFACT_TYPE,
                metadata={"condition_id": record.condition_id, "status": record.status},
            )
            artifact.add_file(str(self.written), name=self.written.name)
            logger.experiment.log_artifact(artifact)
        except Exception as error:  # the artifact is a copy; the local record is the truth (contract 7)
            if self.wandb_errors == "raise":
                raise
            print(
                f"warning: the record artifact could not be logged to W&B ({error_text(error)}); the local "
                f"record {self.written} is complete",
                file=sys.stderr,
            )


RECORD_ARTIFACT_TYPE = "condition-record"
_ARTIFACT_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def artifact_name(condition_id: str) -> str:
    """A W&B artifact name for a condition (alphanumerics, ``-``, ``_``, ``.`` only): the id itself when it is
    already safe, else the id with each other character as ``-`` and a short hash of the id, so two ids never
    share a name and the same id always gets the same one (a re-run adds a version)."""
    safe = _ARTIFACT_UNSAFE.sub("-", condition_id)
    if safe == condition_id:
        return condition_id
    return f"{safe}-{hashlib.sha256(condition_id.encode('utf-8')).hexdigest()[:8]}"


def arm_label(flat: dict[str, Any]) -> str:
    """The arm as the report names it: ``baseline`` or ``agency``, ``agency(key=value, ...)`` where it departs from
    the default agency settings, and `` + <kind> protection (<fraction>%)`` where pruning protected heads."""
    arm = "baseline"
    if flat.get("model.agency.enabled"):
        changed = [
            f"{name}={_shown(flat.get('model.agency.' + name))}"
            for name in flat.get("model.agency.departures") or []
        ]
        arm = f"agency({', '.join(changed)})" if changed else "agency"
    kind, fraction = flat.get("model.pruning.protect") or "none", flat.get("model.pruning.protect_fraction")
    if kind != "none" and fraction:
        arm += f" + {kind} protection ({100 * float(fraction):g}%)"
    return arm


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return json.dumps(value) if isinstance(value, list | dict) else str(value)


def run_name(record: ConditionRecord) -> str:
    """A W&B run name a person can read: model, method, level, arm, temperature."""
    return condition_name(record.config)


def condition_name(config: dict[str, Any]) -> str:
    """A condition as a person reads it (W&B run names, progress lines): model, method, level, arm, temperature."""
    flat = flatten(config)
    model = Path(str(flat.get("model.model_name", "model")).rstrip("/")).name or "model"
    temperature = flat.get("model.generation.temperature")
    return " ".join(
        str(part)
        for part in (
            model,
            flat.get("model.pruning.method"),
            f"{flat.get('model.pruning.level'):g}%",
            arm_label(flat),
            None if temperature is None else f"T={temperature:g}",
        )
        if part is not None
    )


def run_tags(record: ConditionRecord) -> list[str]:
    """``key:value`` tags to filter runs by (W&B allows 64 characters a tag)."""
    flat = flatten(record.config)
    model = Path(str(flat.get("model.model_name", "model")).rstrip("/")).name or "model"
    tags = {
        "model": model,
        "method": flat.get("model.pruning.method"),
        "level": f"{flat.get('model.pruning.level'):g}",
        "arm": arm_label(flat),
        "temperature": None
        if flat.get("model.generation.temperature") is None
        else f"{flat['model.generation.temperature']:g}",
    }
    return [f"{key}:{value}"[:64] for key, value in tags.items() if value is not None]


def samples_of(generated: Generated) -> list[Sample]:
    """The record's samples of one batch; a row whose generation failed keeps no text and says why."""
    samples = []
    for row, item in enumerate(generated.items):
        failed = row in generated.failed_rows
        sample = Sample(
            int(item.prompt_index),
            int(item.iteration),
            int(generated.seeds[row]),
            item.prompt,
            "" if failed else generated.continuations[row],
            len(generated.prompt_ids[row]),
            int(generated.truncated_tokens.get(row, 0)),
        )
        if failed:
            sample.failures["generation"] = generation_failure(generated.failed_rows[row])
        samples.append(sample)
    return samples


def dashboard_config(record: ConditionRecord) -> dict[str, Any]:
    """Short keys to group W&B runs by in a dashboard."""
    flat = flatten(record.config)
    return {
        "model": flat.get("model.model_name"),
        "arm": arm_label(flat),
        "pruning_level": flat.get("model.pruning.level"),
        "pruning_method": flat.get("model.pruning.method"),
        "agency": bool(flat.get("model.agency.enabled")),
        "temperature": flat.get("model.generation.temperature"),
        "seed": flat.get("model.seed"),
    }


def wandb_summary(record: ConditionRecord) -> dict[str, Any]:
    """Flat: per per-sample or per-repeat metric its central value (the geometric mean on the log scale, else
    the mean) under its own name, with mean, std and n beside it; condition metrics; agency counts."""
    summary: dict[str, Any] = {}
    for name, stats in record.aggregates.items():
        if stats.central is not None:
            summary[name] = stats.central
        for key in ("mean", "std", "n", "n_failed"):
            value = getattr(stats, key)
            if value is not None:
                summary[f"{name}/{key}"] = value
    summary.update(record.condition_metrics)
    summary["pruned_heads_count"] = len(record.pruning.heads) if record.pruning else 0
    if record.agency is not None:
        for state, count in record.agency.state_counts_end.items():
            summary[f"agency/end_{state}"] = count
        for state, count in record.agency.state_counts_mean.items():
            summary[f"agency/mean_{state}"] = count
        for kind, count in record.agency.violations.items():
            summary[f"agency/violations_{kind}"] = count
        summary["agency/withholding_consent"] = record.agency.withholding_consent
        summary["agency/misaligned_heads"] = len(record.agency.misaligned)
    return summary


def summary_line(record: ConditionRecord, path: Path) -> str:
    """One line per condition for the terminal."""
    flat = flatten(record.config)

    def shown(name: str) -> str:
        value: float | None
        if name in record.condition_metrics:
            value = record.condition_metrics[name]
        else:
            stats = record.aggregates.get(name)
            value = None if stats is None else stats.central
        return f"{value:.4g}" if value is not None else measurement_state(record, flat, name)

    arm = arm_label(flat)  # as the run is named, and as the report names an arm it cannot tell from others
    failed = sum(1 for s in record.samples if s.failures)
    return (
        f"[{arm}] {flat.get('model.model_name')} {flat.get('model.pruning.method')} "
        f"{flat.get('model.pruning.level'):g}% T={flat.get('model.generation.temperature'):g}: "
        f"{shown('tokens_per_second')} tok/s, first token {shown('first_token_latency_s')} s, "
        f"ref ppl {shown('reference_perplexity')}, corpus ppl {shown(CORPUS_PERPLEXITY)}, "
        f"distinct-2 {shown('distinct_2')}, samples {len(record.samples)} ({failed} with failures) -> {path}"
    )


def measurement_state(record: ConditionRecord, flat: dict[str, Any], name: str) -> str:
    """Why a metric has no value: ``off`` (its switch is off), ``failed`` (a failure is recorded for it, its
    part, the condition or, per sample, the generation), else ``not measured`` (no callback measured it)."""
    spec = METRICS[name]
    if flat.get(SWITCHES.get(name, "")) is False:
        return "off"
    if flat.get(EVALUATION_ONLY) is True and spec.measured_per in ("sample", "timing"):
        return "off (evaluation only)"
    scopes = {name, spec.part, "condition"}
    rows = [s.failures for s in record.samples] if spec.measured_per == "sample" else []
    if spec.measured_per == "timing" and record.timing is not None:
        rows = [r.failures for r in record.timing.repeats]
    if any(f.metric in scopes for f in record.failures) or any(
        name in failures or "generation" in failures for failures in rows
    ):
        return "failed"
    return "not measured"
