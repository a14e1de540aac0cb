"""Progress lines: the last step of a phase always prints, fast steps are rate-limited, a phase says when it ends."""

from __future__ import annotations

import pytest

from lightning_modules import progress
from lightning_modules.progress import Progress, phase


def test_fast_steps_print_once_at_first_and_once_when_done(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    steps = Progress("timing session 1 of 3: cells", 4, every_s=5.0)
    for _ in range(4):
        steps.advance("timed")
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "timing session 1 of 3: cells: 1/4 timed (0 s)",
        "timing session 1 of 3: cells: 4/4 timed (0 s)",
    ]


def test_a_slow_step_prints_every_time(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([0.0, 6.0, 12.0, 18.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    steps = Progress("heads ablated", None, every_s=5.0)
    for _ in range(3):
        steps.advance()
    assert capsys.readouterr().err.splitlines() == [
        "heads ablated: 1 (6 s)",
        "heads ablated: 2 (12 s)",
        "heads ablated: 3 (18 s)",
    ]


def test_a_phase_says_when_it_starts_and_how_long_it_took(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([10.0, 13.4])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    with phase("loading model 'embedded'"):
        pass
    assert capsys.readouterr().err.splitlines() == [
        "loading model 'embedded' ...",
        "loading model 'embedded': done (3 s)",
    ]


def test_a_step_that_starts_after_a_quiet_spell_says_so(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([0.0, 1.0, 3.0, 9.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    steps = Progress("cells", 3, every_s=5.0)
    steps.starting("cell 1")  # nothing printed yet: say it
    steps.starting("cell 1 again")  # 2 s later: quiet
    steps.advance("timed")  # 8 s after the last line
    assert capsys.readouterr().err.splitlines() == ["cells: 1/3 cell 1 ... (1 s)", "cells: 1/3 timed (9 s)"]
