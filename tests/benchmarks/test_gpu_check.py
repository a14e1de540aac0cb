"""The prepared GPU check: its no-GPU exit, and the summary it builds from each step's output (on the CPU here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from run_helpers import REPO, uninterrupted_sweep

from benchmarks import gpu_check
from benchmarks.common import Row
from lightning_modules.runs.sweep_file import expand, load_sweep


def test_without_a_gpu_it_says_so_and_exits_0() -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable}
    completed = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh"], cwd=REPO, capture_output=True, text=True, env=env, check=False
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("no GPU:")


def test_its_sweep_is_the_smoke_grid_on_cuda_with_peak_memory() -> None:
    runs = expand(load_sweep(gpu_check.SWEEP))
    assert len(runs) == 4
    assert all(run["trainer.accelerator"] == "cuda" and run["memory.enabled"] is True for run in runs)
    smoke = expand(load_sweep("smoke"))
    assert [{k: v for k, v in run.items() if k in smoke[0]} for run in runs] == smoke


def test_contract_lines_read_pytest_results(tmp_path: Path) -> None:
    tests = tmp_path / "test_example.py"
    tests.write_text(
        "import pytest\n\ndef test_ok():\n    pass\n\ndef test_bad():\n    assert 1 == 2\n\n"
        "@pytest.mark.skip(reason='needs a CUDA device')\ndef test_skipped():\n    pass\n"
    )
    junit = tmp_path / "out.xml"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(tests),
            f"--junitxml={junit}",
            "-o",
            "junit_family=xunit1",
        ],
        cwd=tmp_path,
        capture_output=True,
        check=False,
    )
    found = {line.check.split("::")[-1]: line for line in gpu_check.contract_lines(junit)}
    assert (found["test_ok"].result, found["test_ok"].failed) == ("passed", False)
    assert (found["test_bad"].result, found["test_bad"].failed) == ("FAILED", True)
    assert found["test_skipped"].result == "skipped" and "CUDA" in found["test_skipped"].details
    assert gpu_check.contract_lines(tmp_path / "missing.xml")[0].failed


def test_figure_lines_fail_only_on_a_missed_goal() -> None:
    rows = [
        Row("7 gpu: 1 gate overhead", "gated / plain", "gpt2", "cuda float32", 8, 32, 0.98, goal=0.95),
        Row("7 gpu: 4 pruning", "removed / masked", "gpt2", "cuda bfloat16", 8, 32, 1.01, goal=1.2),
        Row("7 gpu: 3 limit", "share of bandwidth", "gpt2", "cuda float32", 8, 32, 0.4),
    ]
    lines = gpu_check.figure_lines(rows)
    assert [line.failed for line in lines] == [False, True, False]
    assert lines[0].check == "1 gate overhead / gated / plain" and "goal >= 0.95" in lines[0].details


@pytest.mark.slow  # its fixture runs a whole sweep on a tiny model
def test_sweep_lines_flag_conditions_that_did_not_complete_on_cuda(smoke_records: Path) -> None:
    lines = gpu_check.sweep_lines(smoke_records, exit_code=0)
    assert len(lines) == 4
    assert all(line.result == "complete on cpu" and line.failed for line in lines)  # these ran on the CPU
    assert all("tok/s (median of" in line.details and "corpus ppl" in line.details for line in lines)
    missing = gpu_check.sweep_lines(smoke_records.parent / "nothing", exit_code=1)
    assert missing[-1].failed and "0 of 4 records" in missing[-1].details


def test_summary_counts_failed_checks() -> None:
    text = gpu_check.format_summary(
        [
            gpu_check.Line("sweep", "a", "complete on cuda:0", "12 tok/s"),
            gpu_check.Line("contracts", "b", "FAILED", "assert", failed=True),
        ]
    )
    assert text.splitlines()[0].split(" | ")[:3] == ["step     ", "check", "result            "]
    assert text.endswith("1 check(s) failed")
    assert gpu_check.format_summary([gpu_check.Line("sweep", "a", "ok")]).endswith("every check passed")


@pytest.fixture(scope="module")
def smoke_records(
    tmp_path_factory: pytest.TempPathFactory, tiny_gpt2_dir: Path, tiny_prompt_file: Path
) -> Path:
    """Four records of the smoke grid (0 and 50%, both arms), on the CPU, from the tiny GPT-2 (seconds)."""
    grid = {"model.pruning.level": {"values": [0, 50]}, "model.agency.enabled": {"values": [False, True]}}
    return uninterrupted_sweep(tmp_path_factory.mktemp("smoke"), tiny_gpt2_dir, tiny_prompt_file, grid)[1]
