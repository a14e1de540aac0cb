"""W&B without surprises: no login prompt, no endless wait, no lost record.

Online mode without credentials is refused (``record.wandb_errors=raise``) or
switched to offline with one warning (``continue``, the default) before anything
runs, so nothing prompts or waits for a login. Closing a run is bounded in time:
``wandb.finish`` waits for W&B's service without a limit, and a service that died
makes that wait endless.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from record.errors import ConfigError

WANDB_LOGGER = "lightning.pytorch.loggers.WandbLogger"
WANDB_OFFLINE_MODES = ("offline", "dryrun", "disabled")

_WARNED: set[str] = set()


def warn_once(message: str) -> None:
    """One ``warning:`` line on stderr per distinct message and process (a sweep checks every condition)."""
    if message not in _WARNED:
        _WARNED.add(message)
        print(f"warning: {message}", file=sys.stderr, flush=True)


def _wandb_loggers(trainer_config: Any) -> list[Any]:
    logger = trainer_config.logger
    loggers = logger if isinstance(logger, list) else [logger]
    return [lg for lg in loggers if getattr(lg, "class_path", None) == WANDB_LOGGER]


def wandb_credentials_found() -> bool:
    """Whether W&B has an API key (environment, settings or .netrc), asked without a prompt or a server."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    where = (
        os.environ.get("HOME"),
        os.environ.get("NETRC"),
        os.environ.get("WANDB_CONFIG_DIR"),
        os.environ.get("WANDB_BASE_URL"),
    )
    return _stored_wandb_credentials(where)


@functools.lru_cache(maxsize=8)
def _stored_wandb_credentials(_where: tuple[str | None, ...]) -> bool:
    import wandb

    try:
        found = bool(wandb.login(prompt=False, verify=False))
    except Exception:  # noqa: BLE001 - an unusable key or settings file counts as none
        found = False
    if wandb.run is None:
        wandb.teardown()  # the check set up wandb's global state in online mode; a later offline run needs it fresh
    return found


def check_wandb(config: Any) -> None:
    """Online W&B without credentials: refuse (``raise``) or log offline with one warning (``continue``)."""
    mode = os.environ.get("WANDB_MODE", "online").lower()
    online = [
        lg
        for lg in _wandb_loggers(config.trainer)
        if not lg.init_args.get("offline") and mode not in WANDB_OFFLINE_MODES
    ]
    if not online or wandb_credentials_found():
        return
    if config.record.wandb_errors == "raise":
        raise ConfigError(
            "record.wandb_errors",
            "raise",
            "set WANDB_API_KEY or run 'wandb login', set "
            "WANDB_MODE=offline, or record.wandb_errors=continue to log offline",
            f"cannot hold: W&B is online (WANDB_MODE={mode}) but no API key is configured",
        )
    for logger in online:
        logger.init_args.offline = True
    warn_once(
        f"W&B is online (WANDB_MODE={mode}) but no API key is configured (WANDB_API_KEY, ~/.netrc or "
        "'wandb login'); logging to W&B offline instead (upload later with 'wandb sync'); "
        "local records are written as usual"
    )


# While a signal handler is active (lightning_modules/runs/interruption.py), it registers here how to hold a
# signal back for a moment; starting a W&B run uses it, so Ctrl-C never lands half-way through wandb.init.
_signal_deferrals: list[Callable[[], AbstractContextManager[None]]] = []


def defer_signals_with(deferral: Callable[[], AbstractContextManager[None]]) -> Callable[[], None]:
    """Register how the active signal handler defers a signal; returns the call that unregisters it."""
    _signal_deferrals.append(deferral)
    return lambda: _signal_deferrals.remove(deferral)


def start_wandb_run(logger: Any) -> Any:
    """Start the logger's W&B run with Ctrl-C/SIGTERM held back until it has started: an interrupted
    ``wandb.init`` left an offline run that was never finished (no exit record); a started run is closed with
    the interruption's exit code like any other."""
    with _signal_deferrals[-1]() if _signal_deferrals else nullcontext():
        return logger.experiment


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
    except Exception as error:  # noqa: BLE001 - W&B's own errors of any type: a warning, never a lost run
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
        print(
            f"warning: W&B run did not finish within {timeout_s:g} s (its service is not answering); its local "
            "files are kept and no record depends on it",
            file=sys.stderr,
            flush=True,
        )
        return False
    if failure:  # never lose a condition or a sweep over W&B
        print(f"warning: W&B run could not be finished cleanly ({failure[0]})", file=sys.stderr)
        return False
    return True


def discard_wandb_run() -> None:
    """Close the current W&B run and delete its local folder: a condition refused after start-up (a
    ``ConfigError`` from a ``setup``) never ran, so it leaves no run behind. Links W&B keeps beside its runs
    (``latest-run``, the debug logs) that pointed into it go too, and so does a ``wandb/`` folder left empty."""
    try:
        import wandb

        run = wandb.run
        folder = Path(run.dir).parent if run is not None else None
    except (ImportError, AttributeError):  # no W&B, or a run without a folder: nothing to clean up
        return
    if folder is None:
        return
    finish_wandb_run(exit_code=2)
    shutil.rmtree(folder, ignore_errors=True)
    root = folder.parent
    if not root.is_dir():
        return
    for entry in root.iterdir():
        if entry.is_symlink() and not entry.exists():
            entry.unlink(missing_ok=True)
    if not any(root.iterdir()):
        root.rmdir()


def exit_process(code: int) -> None:
    """``SystemExit(code)``, or an immediate exit when a W&B run was abandoned (its exit hooks would hang)."""
    if _wandb_abandoned:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)
