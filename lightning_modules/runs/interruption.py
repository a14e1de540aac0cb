"""Ctrl-C and SIGTERM end the running condition the way Ctrl-C does, once, and cost nothing already measured.

Whatever handler was installed before (the default one, pytest's, or SIG_IGN
under ``nohup``) is put back afterwards.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


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

    from lightning_modules.inputs.wandb_guard import defer_signals_with

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, handler)
    unregister = defer_signals_with(state.critical)
    try:
        yield state
    finally:
        unregister()
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
