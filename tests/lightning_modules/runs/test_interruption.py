"""Signals end a condition the way Ctrl-C does, once, and the handler that was there before comes back."""

from __future__ import annotations

import os
import signal

import pytest

from lightning_modules.runs.interruption import interrupt_on_signals


@pytest.mark.parametrize("before", [signal.SIG_IGN, signal.default_int_handler], ids=["nohup", "terminal"])
def test_whatever_handler_was_installed_comes_back(before) -> None:
    saved = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, before)
    try:
        with pytest.raises(KeyboardInterrupt), interrupt_on_signals() as state:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(10_000_000):  # the handler raises at the next bytecode boundary
                pass
        assert state.signum == signal.SIGINT and state.exit_code == 130
        assert signal.getsignal(signal.SIGINT) == before
    finally:
        signal.signal(signal.SIGINT, saved)


def test_a_second_signal_is_ignored_and_a_critical_section_defers_the_first() -> None:
    with interrupt_on_signals() as state:
        with pytest.raises(KeyboardInterrupt):
            with state.critical():
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(100_000):
                    pass
                assert state.deferred  # held back until the section ends
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal does nothing now
        for _ in range(100_000):
            pass
    assert state.name == "SIGTERM" and state.exit_code == 143
