"""The manipulation check on a real run: a tiny sweep through the real CLI whose agency states never act (no
calibration, an overload threshold no head reaches, no head overrides), with the run-time state gating switched off in a variant. Every agency
record must say its states did not act, and the report must read the state ablation as uninformative rather than
as "no significant difference" (contract 13)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from run_helpers import REPO, tiny_sweep

from reporting.analyses.manipulation import UNINFORMATIVE

VARIANT = "agency(state_gating=false)"


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "HF_HUB_OFFLINE": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(
        [sys.executable, "cli.py", *args],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow  # two real CLI processes: a 6-condition sweep on the tiny model and its report
def test_an_ablation_of_states_that_never_acted_reads_uninformative_on_a_real_run(
    tiny_gpt2_dir: Path, tiny_prompt_file: Path, tmp_path: Path
) -> None:
    parameters = {
        "model.pruning.level": {"values": [0, 50]},
        "model.agency.enabled": {"values": [False, True]},
        "model.agency.ablation": {"values": ["none", "state_gating"]},
        # tuning shared by both agency arms, so the whole layer is still the main arm: no calibration (every
        # head starts active and consenting, nothing starts misaligned) and an overload threshold no
        # utilization exceeds
        "model.agency.calibrate": {"value": False},
        "model.agency.overload_mode": {"value": "absolute"},
        "model.agency.overload_threshold": {"value": 1.0},
    }
    sweep = tiny_sweep(tmp_path / "s", tiny_gpt2_dir, tiny_prompt_file, parameters)
    run = tmp_path / "run"
    done = _cli("sweep", str(sweep), "--output_dir", str(run), "--quiet")
    assert done.returncode == 0, done.stderr[-2000:]

    agency_records = [
        r
        for r in (json.loads(p.read_text(encoding="utf-8")) for p in (run / "records").glob("*.json"))
        if r.get("agency")
    ]
    assert len(agency_records) == 4  # 2 levels x (agency, state gating off)
    for record in agency_records:
        assert sum(record["agency"]["acted_share"].values()) == 0.0
        assert record["agency"]["gate_mass_removed"] == 0.0

    reported = _cli("report", str(run), "--no-wandb", "--no-plots", "--quiet")
    assert reported.returncode == 0, reported.stderr[-2000:]
    summary = (run / "report" / "summary.md").read_text(encoding="utf-8")
    ablation = summary.split("## The agency effect taken apart", 1)[1].split("\n## ", 1)[0]
    variant_rows = [line for line in ablation.splitlines() if f"/ {VARIANT} |" in line]
    assert variant_rows and all(line.endswith(f"| {UNINFORMATIVE} |") for line in variant_rows)
    check = summary.split("## Manipulation check", 1)[1].split("\n## ", 1)[0]
    assert "| did not act |" in check and "| acted |" not in check
