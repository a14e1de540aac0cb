"""Closing a W&B run never hangs the harness: a finish that does not return in time is left behind."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
import wandb
from run_helpers import REPO

from lightning_modules.inputs import wandb_guard
from lightning_modules.inputs.wandb_guard import exit_process, finish_wandb_run


@pytest.fixture
def fake_run(monkeypatch):
    monkeypatch.setattr(wandb, "run", object())
    monkeypatch.setattr(wandb_guard, "_wandb_abandoned", False)


def test_a_finish_that_never_returns_is_abandoned_with_a_warning(fake_run, monkeypatch, capsys) -> None:
    never = threading.Event()
    monkeypatch.setattr(wandb, "finish", lambda exit_code=0: never.wait())
    started = time.monotonic()
    assert finish_wandb_run(130, timeout_s=0.3) is False
    assert time.monotonic() - started < 5
    err = capsys.readouterr().err
    assert "did not finish within 0.3 s" in err and len(err.strip().splitlines()) == 1
    assert wandb_guard._wandb_abandoned
    never.set()


def test_a_finish_that_raises_is_reported_not_raised(fake_run, monkeypatch, capsys) -> None:
    def broken(exit_code=0):
        raise BrokenPipeError("service gone")

    monkeypatch.setattr(wandb, "finish", broken)
    assert finish_wandb_run(1, timeout_s=5) is False
    assert "service gone" in capsys.readouterr().err
    assert not wandb_guard._wandb_abandoned


def test_a_normal_finish_passes_the_exit_code(fake_run, monkeypatch) -> None:
    codes = []
    monkeypatch.setattr(wandb, "finish", lambda exit_code=0: codes.append(exit_code))
    assert finish_wandb_run(143, timeout_s=5) is True
    assert codes == [143]


def test_exit_process_raises_system_exit_unless_a_run_was_abandoned(monkeypatch) -> None:
    monkeypatch.setattr(wandb_guard, "_wandb_abandoned", False)
    with pytest.raises(SystemExit) as exited:
        exit_process(130)
    assert exited.value.code == 130


def test_exit_process_after_an_abandoned_run_exits_at_once_with_the_code() -> None:
    """An abandoned finish thread plus an exit hook that would wait forever: the process still ends."""
    script = (
        "import atexit, threading, sys\n"
        "from lightning_modules.inputs import wandb_guard\n"
        "block = threading.Event()\n"
        "atexit.register(block.wait)\n"  # stands in for W&B's exit hook waiting on a dead service
        "wandb_guard._wandb_abandoned = True\n"
        "print('flushed', flush=False)\n"
        "wandb_guard.exit_process(130)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert result.returncode == 130
    assert result.stdout.strip() == "flushed"


class _StartingRun:
    """A logger whose run start is hit by Ctrl-C half-way through (as ``wandb.init`` can be)."""

    def __init__(self) -> None:
        self.started = False

    @property
    def experiment(self) -> str:
        import os
        import signal

        os.kill(os.getpid(), signal.SIGINT)
        self.started = True
        return "run"


def test_ctrl_c_while_a_wandb_run_starts_takes_effect_once_it_has_started() -> None:
    import signal

    from lightning_modules.inputs.wandb_guard import start_wandb_run
    from lightning_modules.runs.interruption import interrupt_on_signals

    logger = _StartingRun()
    with interrupt_on_signals() as interruption, pytest.raises(KeyboardInterrupt):
        start_wandb_run(logger)
    assert logger.started and interruption.signum == signal.SIGINT  # finished starting, then interrupted
    quiet = _StartingRun()
    previous = signal.signal(signal.SIGINT, lambda *_: None)
    try:
        assert start_wandb_run(quiet) == "run"  # no handler of ours active: nothing deferred, nothing raised
    finally:
        signal.signal(signal.SIGINT, previous)
