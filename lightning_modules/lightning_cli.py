"""The LightningCLI of one condition: config groups, callback order, checks before loading.

Measuring callbacks are config groups (``memory.enabled``, ``outputs.enabled``,
``record.output_dir``...), so the user's original flags are plain keys that a
sweep can vary. They are added in the order they must run: measurements, then
the agency report, then saved outputs (which read the measurements), then the
record writer.

Bad input never costs a model load: every parse error and every check of
``validation.py`` ends as an ``InputError`` (one line naming the value and what
is allowed, exit code 2) right after parsing, before the seed is set or any
class is built. W&B is checked there too: online mode without credentials is
refused (``record.wandb_errors=raise``) or switched to offline with one warning
(``continue``, the default), so that nothing prompts or waits for a login.
"""

from __future__ import annotations

import difflib
import functools
import logging
import os
import re
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
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
from lightning_modules.validation import (
    ALLOWED,
    ConfigError,
    check_wandb_errors,
    resolve_device,
    validate_condition,
)

CALLBACK_GROUPS = (
    ("speed", SpeedMonitor),
    ("memory", MemoryMonitor),
    ("quality", QualityMonitor),
    ("diversity", DiversityMonitor),
    ("agency_report", AgencyReporter),
    ("outputs", OutputWriter),
    ("record", RecordWriter),
)
WANDB_LOGGER = "lightning.pytorch.loggers.WandbLogger"
WANDB_OFFLINE_MODES = ("offline", "dryrun", "disabled")


class InputError(SystemExit):
    """Input that cannot run: exit code 2; ``message`` is one line naming the value and what is allowed.

    A ``SystemExit`` so that no library on the way up mistakes it for a failure to
    handle; ``run_predict`` prints it, the sweep runner adds which condition it was.
    ``key`` is the config key at fault when it is known.
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(2)
        self.message = message
        self.key = key


_WARNED: set[str] = set()


def warn_once(message: str) -> None:
    """One ``warning:`` line on stderr per distinct message and process (a sweep checks every condition)."""
    if message not in _WARNED:
        _WARNED.add(message)
        print(f"warning: {message}", file=sys.stderr, flush=True)


# -- parse errors as one line ------------------------------------------------------------------------
TYPE_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "text",
              "NoneType": "null", "dict": "a mapping", "list": "a list"}


def _known_keys(parser: Any) -> set[str]:
    skip = {"help", "config", "print_config"}
    return {a.dest for a in parser._actions
            if a.dest not in skip and not a.dest.endswith(".help") and a.dest != "==SUPPRESS=="}


def unknown_key_message(key: str, parser: Any, where: str = "") -> str:
    """``config key 'model.nope' is not known; allowed under 'model': agency, calibration, ...``."""
    keys = _known_keys(parser)
    parts = key.split(".")
    prefix = ""
    for end in range(len(parts) - 1, 0, -1):
        candidate = ".".join(parts[:end])
        if any(k.startswith(candidate + ".") for k in keys):
            prefix = candidate
            break
    children = sorted({k[len(prefix) + 1:].split(".")[0] if prefix else k.split(".")[0]
                       for k in keys if not prefix or k.startswith(prefix + ".")})
    close = difflib.get_close_matches(parts[-1], children, n=1, cutoff=0.75)
    longer = sorted(k for k in keys if k.endswith("." + key))  # --calibration.window for model.calibration.window
    if close:
        hint = f" (did you mean '{prefix + '.' if prefix else ''}{close[0]}'?)"
    else:
        hint = f" (did you mean '{longer[0]}'?)" if longer else ""
    scope = f"under '{prefix}'" if prefix else "at the top level"
    return f"config key '{key}'{where} is not known{hint}; allowed {scope}: {', '.join(children)}"


def parse_error_message(message: str, parser: Any) -> tuple[str, str | None]:
    """jsonargparse's (often multi-line) error as one line that names the value and what is allowed."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    flat = " ".join(lines)
    match = re.search(r"unrecognized arguments: (\S+)", flat)
    if match:
        key = match.group(1).lstrip("-").split("=", 1)[0]
        return unknown_key_message(key, parser, f" (given as '{match.group(1)}')"), key
    match = re.search(r"does not accept option '([^']+)'", flat)
    if match:
        return unknown_key_message(match.group(1), parser, " (in a config file)"), match.group(1)
    match = re.search(r"File does not exist: '?([^']+)'?", flat)
    if match:
        return (f"config file '{match.group(1)}' does not exist; allowed: a path to a YAML config file",
                "config")
    match = re.match(r'Parser key "([^"]+)":', flat)
    if match:
        key = match.group(1)
        value = next((m.group(1) for line in lines
                      if (m := re.search(r"Got value: (.*)$", line) or re.match(r"Given value: (.*)$", line)
                          or re.match(r"Unable to load config '(.*)'$", line))), None)
        types = list(dict.fromkeys(re.findall(r"Expected a <class '(\w+)'>", flat)))
        children = sorted({k[len(key) + 1:].split(".")[0] for k in _known_keys(parser) if k.startswith(key + ".")})
        allowed = (ALLOWED.get(key) or " or ".join(TYPE_WORDS.get(t, t) for t in types)
                   or (f"a mapping with keys {', '.join(children)}" if children else "see --help"))
        shown = f" '{value}'" if value is not None else ""
        return f"{key}{shown} is invalid; allowed: {allowed}", key
    return flat or "invalid arguments", None


class OneLineErrorParser(LightningArgumentParser):
    """Parse errors (unknown keys, malformed YAML, wrong types) as one line, not a usage dump."""

    def error(self, message: str, *args: Any, **kwargs: Any) -> None:
        parser: Any = self
        subcommand = re.match(r"Subcommand '([^']+)'", str(message))
        subcommands = getattr(self, "_subcommands_action", None)
        if subcommand and subcommands is not None:  # config-file errors surface on the root parser
            parser = subcommands._name_parser_map.get(subcommand.group(1), self)
        text, key = parse_error_message(message, parser)
        raise InputError(text, key)


# -- config files: readable YAML mappings, named when they are not -----------------------------------
def _config_paths(argv: list[str]) -> list[str]:
    paths = []
    for index, arg in enumerate(argv):
        if arg in ("--config", "-c") and index + 1 < len(argv):
            paths.append(argv[index + 1])
        elif arg.startswith("--config="):
            paths.append(arg.split("=", 1)[1])
    return paths


def check_config_file(path: str) -> None:
    """A config file that exists must be a UTF-8 YAML mapping (a missing one is the parser's to name)."""
    import yaml

    file = Path(path)
    if not file.is_file():
        return
    allowed = "allowed: a YAML mapping of config keys (see --print_config)"
    try:
        content = yaml.safe_load(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise InputError(f"config file '{path}' is not UTF-8 text (byte {error.start}); {allowed}", "config") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise InputError(f"config file '{path}' is not valid YAML ({where}{problem}); {allowed}", "config") from None
    if content is not None and not isinstance(content, dict):
        raise InputError(f"config file '{path}' holds a {type(content).__name__}, not a mapping; {allowed}",
                         "config")


# -- W&B: no prompt, no login wait ---------------------------------------------------------------------
def _wandb_loggers(trainer_config: Any) -> list[Any]:
    logger = trainer_config.logger
    loggers = logger if isinstance(logger, list) else [logger]
    return [lg for lg in loggers if getattr(lg, "class_path", None) == WANDB_LOGGER]


def wandb_credentials_found() -> bool:
    """Whether W&B has an API key (environment, settings or .netrc), asked without a prompt or a server."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    where = (os.environ.get("HOME"), os.environ.get("NETRC"), os.environ.get("WANDB_CONFIG_DIR"),
             os.environ.get("WANDB_BASE_URL"))
    return _stored_wandb_credentials(where)


@functools.lru_cache(maxsize=8)
def _stored_wandb_credentials(_where: tuple[str | None, ...]) -> bool:
    import wandb

    try:
        found = bool(wandb.login(prompt=False, verify=False))
    except Exception:  # an unusable key or settings file counts as none
        found = False
    if wandb.run is None:
        wandb.teardown()  # the check set up wandb's global state in online mode; a later offline run needs it fresh
    return found


def check_wandb(config: Any) -> None:
    """Online W&B without credentials: refuse (``raise``) or log offline with one warning (``continue``)."""
    mode = os.environ.get("WANDB_MODE", "online").lower()
    online = [lg for lg in _wandb_loggers(config.trainer)
              if not lg.init_args.get("offline") and mode not in WANDB_OFFLINE_MODES]
    if not online or wandb_credentials_found():
        return
    if config.record.wandb_errors == "raise":
        raise InputError(
            f"W&B is online (WANDB_MODE={mode}) but no API key is configured, and record.wandb_errors=raise; "
            "allowed: set WANDB_API_KEY or run 'wandb login', set WANDB_MODE=offline, "
            "or record.wandb_errors=continue to log offline", "record.wandb_errors")
    for logger in online:
        logger.init_args.offline = True
    warn_once(f"W&B is online (WANDB_MODE={mode}) but no API key is configured (WANDB_API_KEY, ~/.netrc or "
              "'wandb login'); logging to W&B offline instead (upload later with 'wandb sync'); "
              "local records are written as usual")


# -- the CLI -----------------------------------------------------------------------------------------------
class ConditionChecked(Exception):
    """Raised by a check-only CLI after every check passed, carrying the parsed condition."""

    def __init__(self, namespace: Any) -> None:
        super().__init__("checked")
        self.namespace = namespace


class ExperimentCLI(LightningCLI):
    """``predict`` only: a condition is generation and measurement, never training."""

    check_only = False  # stop after the checks (the sweep runner checks every condition first)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {"predict": {"model", "dataloaders", "datamodule"}}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for name, callback in CALLBACK_GROUPS:
            parser.add_lightning_class_args(callback, name)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse, then check everything that can be checked without weights: before the seed, before any class."""
        if isinstance(args, list):
            for path in _config_paths(args):
                check_config_file(path)
        super().parse_arguments(parser, args)
        if self.config.get("subcommand") != "predict":
            return
        config = self.config["predict"]
        try:
            device = resolve_device(config.trainer.accelerator)
            check_wandb_errors(config.record.wandb_errors)
            validate_condition(config.model, config.data, device, config.record.output_dir)
        except ConfigError as error:
            raise InputError(str(error), error.key) from None
        config.trainer.accelerator = device
        check_wandb(config)
        if self.check_only:
            raise ConditionChecked(config)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        if config.record.quiet:
            config.trainer.enable_progress_bar = False
            config.trainer.enable_model_summary = False
            for name in ("lightning.pytorch", "lightning.fabric"):
                logging.getLogger(name).setLevel(logging.WARNING)
            warnings.filterwarnings("ignore")
            os.environ["WANDB_SILENT"] = "true"  # read when the run starts, after this point
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        for logger in _wandb_loggers(config.trainer):
            if logger.init_args.get("save_dir") in (None, "."):
                logger.init_args.save_dir = str(self._run_dir(config))

    def after_instantiate_classes(self) -> None:
        """In ``continue`` mode a W&B run that cannot start costs the W&B run only, never the condition."""
        config = self.config[self.subcommand]
        if config.record.wandb_errors != "continue":
            return
        from lightning.pytorch.loggers import WandbLogger

        kept = []
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger):
                try:
                    _ = logger.experiment
                except Exception as error:
                    first_line = (str(error).splitlines() or [""])[0]
                    warn_once(f"W&B could not start a run ({type(error).__name__}: {first_line}); "
                              "this condition runs without W&B and its local record is written as usual")
                    continue
            kept.append(logger)
        self.trainer.loggers = kept

    @staticmethod
    def _run_dir(config: Any) -> Any:
        from callbacks.record_writer import default_run_dir

        if not config.record.output_dir:
            config.record.output_dir = str(default_run_dir())
        return config.record.output_dir


class _CheckOnlyCLI(ExperimentCLI):
    check_only = True


# W&B by default (offline unless WANDB_MODE says otherwise), so every config has a run to read.
DEFAULT_LOGGER = {
    "class_path": WANDB_LOGGER,
    "init_args": {"project": "pruning-agency", "save_dir": None, "job_type": "condition", "group": None},
}


def _build(cli_class: type[ExperimentCLI], argv: list[str], **trainer_defaults: Any) -> ExperimentCLI:
    # args are passed explicitly (cli.py dispatches subcommands), which LightningCLI warns about
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
    return cli_class(
        PruningExperiment,
        PromptDataModule,
        args=["predict", *argv],
        parser_class=OneLineErrorParser,
        save_config_callback=None,
        seed_everything_default=False,  # sampling and rankings use their own seeds (model.seed)
        trainer_defaults={"enable_checkpointing": False, "logger": DEFAULT_LOGGER, **trainer_defaults},
    )


def run_predict(argv: list[str], **trainer_defaults: Any) -> ExperimentCLI:
    """Run one condition; bad input ends here as ``error: ...`` on stderr and exit code 2."""
    try:
        return _build(ExperimentCLI, argv, **trainer_defaults)
    except InputError as error:
        print(f"error: {error.message}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def check_args(argv: list[str]) -> Any:
    """Parse and check one condition's arguments without building anything; raise ``InputError`` if bad."""
    try:
        _build(_CheckOnlyCLI, argv)
    except ConditionChecked as checked:
        return checked.namespace
    raise AssertionError("the check-only CLI returned without checking")  # pragma: no cover


WANDB_FINISH_TIMEOUT_S = 300.0
_wandb_abandoned = False


def finish_wandb_run(exit_code: int = 0, timeout_s: float = WANDB_FINISH_TIMEOUT_S) -> bool:
    """Close the current W&B run with ``exit_code`` (each condition is its own run); never raise, never hang.

    ``wandb.finish`` waits for W&B's service without a time limit; a service that
    died (killed with the process group, out of memory) makes that wait endless.
    So it runs in a helper thread: after ``timeout_s`` the run is left as it is
    (its offline files stay; the records never depend on it), a warning says so,
    and :func:`exit_process` later ends the process without W&B's exit hooks, which
    would wait on the same service. Returns whether the run was closed cleanly.
    """
    global _wandb_abandoned
    try:
        import wandb

        if wandb.run is None:
            return True
    except Exception as error:
        print(f"warning: W&B run could not be finished cleanly ({error})", file=sys.stderr)
        return False
    failure: list[BaseException] = []

    def finish() -> None:
        try:
            wandb.finish(exit_code=exit_code)
        except BaseException as error:  # noqa: BLE001 - reported below, never lost
            failure.append(error)

    worker = threading.Thread(target=finish, name="wandb-finish", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        _wandb_abandoned = True
        print(f"warning: W&B run did not finish within {timeout_s:g} s (its service is not answering); its local "
              "files are kept and no record depends on it", file=sys.stderr, flush=True)
        return False
    if failure:  # never lose a condition or a sweep over W&B
        print(f"warning: W&B run could not be finished cleanly ({failure[0]})", file=sys.stderr)
        return False
    return True


def exit_process(code: int) -> None:
    """``SystemExit(code)``, or an immediate exit when a W&B run was abandoned (its exit hooks would hang)."""
    if _wandb_abandoned:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)


# -- interruption ----------------------------------------------------------------------------------------
@dataclass
class Interruption:
    """The first SIGINT/SIGTERM received (None: none yet); ``deferred`` holds one back in a critical section."""

    signum: int | None = None
    deferring: bool = False
    deferred: bool = False

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "nothing"

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or 0)

    @contextmanager
    def critical(self) -> Iterator[None]:
        """A signal arriving here (closing a W&B run) takes effect right after, not half-way through."""
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False
        if self.deferred:
            self.deferred = False
            raise KeyboardInterrupt(self.name)


@contextmanager
def interrupt_on_signals() -> Iterator[Interruption]:
    """SIGINT and SIGTERM both end the running condition the way Ctrl-C does, once.

    The first signal raises ``KeyboardInterrupt``: inside ``trainer.predict``
    Lightning turns it into ``on_exception`` (the record writer marks the
    condition incomplete) and ``SystemExit(1)``; callers tell that exit from a
    real one by ``Interruption.signum``. Later signals are ignored, so a second
    Ctrl-C cannot cut a record or a W&B run in half while shutting down.
    """
    state = Interruption()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return

    def handler(signum: int, _frame: Any) -> None:
        if state.signum is not None:
            return
        state.signum = signum
        if state.deferring:
            state.deferred = True
            return
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield state
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
