"""The LightningCLI of one condition: ``predict`` measures it, ``fit`` recovers it; every check before any load.

Measuring callbacks are config groups (``timing.repeats``, ``memory.enabled``,
``outputs.enabled``, ``record.output_dir``...), so every measurement switch is a
plain key that a sweep can vary. Their order does not matter: the record
writer composes the record from every callback's own part.

``fit`` trains the same module (``model.recovery.*``) with Lightning's own
checkpointing into ``<record.output_dir>/checkpoints/<recovered model id>/``;
an interrupted fit resumes from its ``last.ckpt`` by itself.

Bad input never costs a model load: parse errors, the settings' own checks
(raised when the config objects are built) and ``runs/checks.py`` all end as one
``ConfigError`` line (exit code 2) before the model's ``setup`` runs.

Building an ``ExperimentCLI`` parses and checks a condition and stops there; ``run()`` runs that
same object. ``run_predict``/``run_fit`` do both at once; the sweep runner builds every condition
first (``check_args``), so a typo in the last one refuses the sweep before the first one runs.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Any, NoReturn

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from callbacks.base import callbacks_of
from callbacks.speed import ArmTiming, SpeedMonitor
from lightning_modules.callback_groups import CALLBACK_GROUPS
from lightning_modules.data import PromptDataModule
from lightning_modules.describe import describe_condition
from lightning_modules.inputs.arguments import (
    InputRefused,
    check_config_file,
    config_paths,
    parse_error,
    resolve_config_args,
)
from lightning_modules.inputs.checks import ALLOWED, check_condition, resolve_device
from lightning_modules.inputs.wandb_guard import (
    WANDB_LOGGER,
    check_wandb,
    discard_wandb_run,
    start_wandb_run,
    warn_once,
)
from lightning_modules.module import PruningExperiment
from record.errors import ConfigError
from record.schema import Header
from record.storage import default_run_dir

FIT_PRECISION = {"float32": "32-true", "bfloat16": "bf16-mixed", "float16": "16-mixed"}  # fp32 master weights
# W&B by default (offline unless WANDB_MODE says otherwise), so every config has a run to read.
DEFAULT_LOGGER = {
    "class_path": WANDB_LOGGER,
    "init_args": {"project": "pruning-agency", "save_dir": None, "job_type": "condition", "group": None},
}


class OneLineErrorParser(LightningArgumentParser):
    """Parse errors (unknown keys, malformed YAML, wrong types) as one line, not a usage dump."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        import re

        parser: Any = self
        subcommand = re.match(r"Subcommand '([^']+)'", str(message))
        subcommands = getattr(self, "_subcommands_action", None)
        if subcommand and subcommands is not None:  # config-file errors surface on the root parser
            parser = subcommands._name_parser_map.get(subcommand.group(1), self)
        raise InputRefused(parse_error(message, parser, ALLOWED))


class ExperimentCLI(LightningCLI):
    """``predict``: one condition is generation and measurement; ``fit``: its recovery.

    Construction parses and checks (no weights load); ``run()`` then runs the subcommand.
    """

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {
            "predict": {"model", "dataloaders", "datamodule"},
            "fit": {"model", "train_dataloaders", "val_dataloaders", "datamodule"},
        }

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for name, callback in CALLBACK_GROUPS:
            parser.add_lightning_class_args(callback, name)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        if isinstance(args, list):
            for path in config_paths(args):
                check_config_file(path)
        super().parse_arguments(parser, args)
        if self.config.get("subcommand") is None:
            return
        config = self.config[self.config["subcommand"]]
        config.trainer.accelerator = resolve_device(config.trainer.accelerator)
        check_wandb(config)

    def before_instantiate_classes(self) -> None:
        """Settle what the built objects need (quiet mode, the run folder, fit's trainer settings, W&B's folder) before they are built."""
        config = self.config[self.subcommand]
        # Building the Trainer announces the hardware; until every check passed, nothing but an error may print.
        self._lightning_levels = _quiet_lightning()
        if config.record.quiet:
            config.trainer.enable_progress_bar = False
            config.trainer.enable_model_summary = False
            warnings.filterwarnings("ignore")
            os.environ["WANDB_SILENT"] = "true"  # read when the run starts, after this point
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        if not config.record.output_dir:
            config.record.output_dir = str(default_run_dir())
        if self.subcommand == "fit":
            recovery = config.model.recovery
            config.trainer.max_steps = recovery.steps
            config.trainer.max_epochs = -1
            config.trainer.num_sanity_val_steps = 0
            config.trainer.log_every_n_steps = 1
            config.trainer.default_root_dir = config.record.output_dir
            config.trainer.precision = FIT_PRECISION[config.model.precision]
        for logger in _wandb_loggers(config.trainer):
            if logger.init_args.get("save_dir") in (None, "."):
                logger.init_args.save_dir = str(config.record.output_dir)

    def after_instantiate_classes(self) -> None:
        """The checks that need the built settings, and the condition's identity."""
        config = self.config[self.subcommand]
        device = config.trainer.accelerator
        check_condition(
            self.model, self.datamodule, callbacks_of(self.trainer), device, config.record.output_dir
        )
        if self.subcommand == "predict":  # the identity is the resolved config itself (record/identity.py)
            self.model.header = describe_condition(config, self.model, self.datamodule)
        if not config.record.quiet:
            _restore_lightning(self._lightning_levels)

    def _run_subcommand(self, subcommand: str) -> None:
        """Construction stops after the checks: ``run()`` runs the subcommand when its caller is ready."""

    def run(self, timing: ArmTiming | None = None) -> ExperimentCLI:
        """Run the checked subcommand; a W&B run starts only now, so checking costs no W&B run. A ``ConfigError``
        raised while it runs (a module's or a callback's ``setup``) discards that run and propagates.

        ``timing``: this condition's arm of a side-by-side timing (a sweep's cell), handed to its speed callback,
        which records it instead of timing the condition alone."""
        if timing is not None:
            self.speed_monitor.use_timing(timing)
        config = self.config[self.subcommand]
        self._prepare_run(config, config.trainer.accelerator)
        try:
            super()._run_subcommand(str(self.subcommand))
        except ConfigError:  # refused in a setup: the condition never ran, so it leaves no W&B run
            discard_wandb_run()
            raise
        return self

    # What the sweep runner reads from a checked condition before it runs.
    @property
    def header(self) -> Header:
        return self.model.header

    @property
    def module(self) -> PruningExperiment:
        return self.model

    @property
    def speed_monitor(self) -> SpeedMonitor:
        """This condition's speed callback: the one built for its ``timing`` config group (``CALLBACK_GROUPS``)."""
        monitor: SpeedMonitor = self.config_init[self.subcommand].timing
        return monitor

    @property
    def device(self) -> str:
        return self.config[self.subcommand].trainer.accelerator

    @property
    def resolved(self) -> Any:
        """The parsed config the identity was computed from."""
        return self.config[self.subcommand]

    def _prepare_run(self, config: Any, device: str) -> None:
        """Fit checkpoints, then (``continue`` mode) a W&B run that cannot start costs the W&B run only,
        never the condition."""
        if self.subcommand == "fit":
            self._prepare_fit(config, device)
        from lightning.pytorch.loggers import WandbLogger

        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger):
                _drop_unset_anonymous(logger)
        if config.record.wandb_errors != "continue":
            return
        kept = []
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger):
                try:
                    start_wandb_run(logger)
                except Exception as error:  # noqa: BLE001 - W&B start-up, not a measurement: any failure costs W&B only
                    first_line = (str(error).splitlines() or [""])[0]
                    warn_once(
                        f"W&B could not start a run ({type(error).__name__}: {first_line}); "
                        "this condition runs without W&B and its local record is written as usual"
                    )
                    continue
            kept.append(logger)
        self.trainer.loggers = kept

    def _prepare_fit(self, config: Any, device: str) -> None:
        """Checkpoints go to the run folder, named by the recovered model; a fit found there resumes."""
        from pathlib import Path

        from lightning.pytorch.callbacks import ModelCheckpoint

        folder = Path(config.record.output_dir) / "checkpoints" / self.model.fit_id(device)
        for callback in callbacks_of(self.trainer):
            if isinstance(callback, ModelCheckpoint):
                callback.dirpath = str(folder)
        self.checkpoint_dir = folder
        last = folder / "last.ckpt"
        if last.is_file() and not self.config_init["fit"].get("ckpt_path"):
            print(f"resuming the fit from {last}", file=sys.stderr, flush=True)
            self.config_init["fit"]["ckpt_path"] = str(last)

    def after_fit(self) -> None:
        self.recovered_checkpoint = self.checkpoint_dir / "last.ckpt"
        print(f"recovered model: {self.recovered_checkpoint}", flush=True)


def _drop_unset_anonymous(logger: Any) -> None:
    """Lightning hands W&B ``anonymous=None``, which wandb 0.31 warns about on every run (the setting is
    deprecated) even though nobody set it; an explicit value is left for W&B to judge."""
    init = getattr(logger, "_wandb_init", None)
    if isinstance(init, dict) and "anonymous" in init and init["anonymous"] is None:
        del init["anonymous"]


def _wandb_loggers(trainer_config: Any) -> list[Any]:
    logger = trainer_config.logger
    loggers = logger if isinstance(logger, list) else [logger]
    return [lg for lg in loggers if getattr(lg, "class_path", None) == WANDB_LOGGER]


def _build(
    cli_class: type[ExperimentCLI], argv: list[str], subcommand: str = "predict", **trainer_defaults: Any
) -> ExperimentCLI:
    # args are passed explicitly (cli.py dispatches subcommands), which LightningCLI warns about
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    if subcommand == "fit":
        from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

        defaults = {
            "enable_checkpointing": True,
            "callbacks": [
                # one file per fit (the latest epoch) and last.ckpt linking to it; it holds the optimiser state a resume needs
                ModelCheckpoint(
                    filename="recovery-{step}",
                    save_top_k=1,
                    save_last="link",
                    every_n_epochs=1,
                    save_on_train_epoch_end=True,
                ),
                LearningRateMonitor("step"),
                *trainer_defaults.pop("callbacks", []),
            ],
        }
    else:
        defaults = {"enable_checkpointing": False}
    try:
        return cli_class(
            PruningExperiment,
            PromptDataModule,
            args=[subcommand, *resolve_config_args(argv)],
            parser_class=OneLineErrorParser,
            save_config_callback=None,
            seed_everything_default=False,  # sampling and rankings use their own seeds (model.seed)
            trainer_defaults={**defaults, "logger": DEFAULT_LOGGER, **trainer_defaults},
        )
    except ConfigError as error:
        raise InputRefused(error) from None


def run_predict(argv: list[str], **trainer_defaults: Any) -> ExperimentCLI:
    """Run one condition; bad input ends here as ``error: ...`` on stderr and exit code 2."""
    return _run("predict", argv, **trainer_defaults)


def run_fit(argv: list[str], **trainer_defaults: Any) -> ExperimentCLI:
    """Recover one condition (``cli.recovered_checkpoint`` is the result); bad input as in ``run_predict``."""
    return _run("fit", argv, **trainer_defaults)


def _run(subcommand: str, argv: list[str], **trainer_defaults: Any) -> ExperimentCLI:
    try:
        cli = _build(ExperimentCLI, argv, subcommand, **trainer_defaults)
    except InputRefused as refused:
        refuse(refused.error)
    try:
        return cli.run()
    except ConfigError as error:  # found after start-up (a setup): the same one line as any bad input
        refuse(error)


def refuse(error: ConfigError) -> NoReturn:
    """Bad input, wherever it was found: one ``error:`` line on stderr and exit status 2, no traceback."""
    print(f"error: {error}", file=sys.stderr, flush=True)
    raise SystemExit(2) from None


def _quiet_lightning() -> dict[str, int]:
    levels = {}
    for name in ("lightning.pytorch", "lightning.fabric"):
        levels[name] = logging.getLogger(name).level
        logging.getLogger(name).setLevel(logging.WARNING)
    return levels


def _restore_lightning(levels: dict[str, int]) -> None:
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def check_args(argv: list[str], **trainer_defaults: Any) -> ExperimentCLI:
    """Parse and check one condition's arguments, building only cheap objects; raise ``InputRefused`` if bad.

    The returned CLI has not run: ``run()`` runs it (the sweep runner checks every condition first)."""
    levels = {name: logging.getLogger(name).level for name in ("lightning.pytorch", "lightning.fabric")}
    try:
        return _build(ExperimentCLI, argv, **trainer_defaults)
    finally:
        _restore_lightning(levels)
