"""Progress of long work, as lines on stderr: what is being done, how far it is, how long it has taken.

A first run spends minutes on work that prints nothing of its own (calibration signals, timing sessions, each
condition's passes). Lines rather than a redrawn bar, so a log file, ``nohup`` and CI read the same thing a
terminal shows; a step that finishes quickly prints at most one line every ``EVERY_S`` seconds, and the
last step of a phase always prints.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

EVERY_S = 5.0  # at most one line per phase this often, unless the phase is done


def say(message: str) -> None:
    """One progress line on stderr, flushed at once (a log written through a pipe sees it now)."""
    print(message, file=sys.stderr, flush=True)


class Progress:
    """Counts the steps of one phase and prints ``<what>: <done>/<total> <detail> (<seconds> s)``."""

    def __init__(self, what: str, total: int | None = None, every_s: float = EVERY_S) -> None:
        self.what = what
        self.total = total
        self.every_s = every_s
        self.done = 0
        self.started = time.monotonic()
        self._printed = -float("inf")

    def advance(self, detail: str = "", steps: int = 1) -> None:
        """Count ``steps`` more; print when the phase is done or the last line is ``every_s`` old."""
        self.done += steps
        now = time.monotonic()
        finished = self.total is not None and self.done >= self.total
        if finished or now - self._printed >= self.every_s:
            self._printed = now
            of = f"/{self.total}" if self.total is not None else ""
            said = f" {detail}" if detail else ""
            say(f"{self.what}: {self.done}{of}{said} ({now - self.started:.0f} s)")

    def starting(self, detail: str) -> None:
        """Say which step starts, when nothing was printed for ``every_s``: a long step is not a silent one."""
        now = time.monotonic()
        if now - self._printed >= self.every_s:
            self._printed = now
            of = f"/{self.total}" if self.total is not None else ""
            say(f"{self.what}: {self.done + 1}{of} {detail} ... ({now - self.started:.0f} s)")


@contextmanager
def phase(what: str) -> Iterator[None]:
    """A phase with no steps to count: one line when it starts and one with its time when it ends."""
    started = time.monotonic()
    say(f"{what} ...")
    yield
    say(f"{what}: done ({time.monotonic() - started:.0f} s)")
