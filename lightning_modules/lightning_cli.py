"""The LightningCLI of one condition: config groups, callback order, checks before loading.

Measuring callbacks are config groups (``memory.enabled``, ``outputs.enabled``,
``record.output_dir``...), so the user's original flags are plain keys that a
sweep can vary. They are added in the order they must run: measurements, then
the agency report, then saved outputs (which read the measurements), then the
record writer.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from callbacks.agency_report import AgencyReporter
from callbacks.diversity import DiversityMonitor
from callbacks.memory import MemoryMonitor
from callbacks.outputs import OutputWriter
from callbacks.quality import QualityMonitor
from callbacks.record_writer import RecordWriter
from callbacks.speed import SpeedMonitor
from lightning_modules.data import PromptDataModule
from lightning_modules.module import PruningExperiment
from lightning_modules.validation import ConfigError, resolve_device, validate_condition

CALLBACK_GROUPS = (
    ("speed", SpeedMonitor),
    ("memory", MemoryMonitor),
    ("quality", QualityMonitor),
    ("diversity", DiversityMonitor),
    ("agency_report", AgencyReporter),
    ("outputs", OutputWriter),
    ("record", RecordWriter),
)


def _one_line(message: str) -> str:
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    return " ".join(lines[:3]) if lines else "invalid arguments"


class OneLineErrorParser(LightningArgumentParser):
    """Parse errors (unknown keys, malformed YAML, wrong types) as one line, not a usage dump."""

    def error(self, message: str, *args: Any, **kwargs: Any) -> None:
        import os as _o
        if _o.environ.get("RAWERR"): print(repr(message), file=sys.stderr)
        print(f"error: {_one_line(message)}", file=sys.stderr)
        raise SystemExit(2)


class ExperimentCLI(LightningCLI):
    """``predict`` only: a condition is generation and measurement, never training."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {"predict": {"model", "dataloaders", "datamodule"}}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for name, callback in CALLBACK_GROUPS:
            parser.add_lightning_class_args(callback, name)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        try:
            device = resolve_device(config.trainer.accelerator)
            validate_condition(config.model, config.data, device, config.record.output_dir)
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2) from None
        config.trainer.accelerator = device
        if config.record.quiet:
            config.trainer.enable_progress_bar = False
            config.trainer.enable_model_summary = False
            logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
            warnings.filterwarnings("ignore")
        logger = config.trainer.logger
        if logger and getattr(logger, "init_args", None) is not None and "save_dir" in logger.init_args:
            if logger.init_args.save_dir in (None, "."):
                logger.init_args.save_dir = str(self._run_dir(config))

    @staticmethod
    def _run_dir(config: Any) -> Any:
        from callbacks.record_writer import default_run_dir

        if not config.record.output_dir:
            config.record.output_dir = str(default_run_dir())
        return config.record.output_dir


# W&B by default (offline unless WANDB_MODE says otherwise), so every config has a run to read.
DEFAULT_LOGGER = {
    "class_path": "lightning.pytorch.loggers.WandbLogger",
    "init_args": {"project": "pruning-agency", "save_dir": None, "job_type": "condition", "group": None},
}


def run_predict(argv: list[str], **trainer_defaults: Any) -> ExperimentCLI:
    # args are passed explicitly (cli.py dispatches subcommands), which LightningCLI warns about
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    return ExperimentCLI(
        PruningExperiment,
        PromptDataModule,
        args=["predict", *argv],
        parser_class=OneLineErrorParser,
        save_config_callback=None,
        trainer_defaults={"enable_checkpointing": False, "logger": DEFAULT_LOGGER, **trainer_defaults},
    )
