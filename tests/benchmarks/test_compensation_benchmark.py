"""The compensation benchmark runs end to end on a tiny model and prints one row per ranking and level."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.compensation import main

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_benchmark_prints_zeroed_compensated_and_the_window_test(tiny_llama_dir: Path, capsys) -> None:
    args = ["--model", str(tiny_llama_dir), "--levels", "25", "50", "--methods", "magnitude"]
    assert main([*args, "--eval-tokens", "96", "--window", "16"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("magnitude")]
    assert len(rows) == 2 and all(" | x" in row and ", p " in row for row in rows)
