"""The real CLI writes a local record and an offline W&B run that agree, read back with wandb's own reader."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Every test reads one real CLI run with an offline W&B run (its start alone takes tens of seconds).
pytestmark = pytest.mark.slow


def _wandb_events(run_dir: Path) -> list[dict]:
    wandb_cli = Path(sys.executable).with_name("wandb")
    out = subprocess.run(
        [str(wandb_cli), "leet", "inspect", "--json", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def predicted_run(tiny_gpt2_dir: Path, tiny_prompt_file: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("predict")
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    finished = subprocess.run(
        [
            sys.executable,
            "cli.py",
            "predict",
            "--config",
            "configs/default.yaml",
            f"--model.model_name={tiny_gpt2_dir}",
            f"--data.prompt_file={tiny_prompt_file}",
            "--data.max_prompts=2",
            "--data.iterations=2",
            "--model.generation.num_tokens=6",
            "--model.pruning.level=25",
            "--model.agency.enabled=true",
            "--model.calibration.window=64",
            "--model.evaluation.window=64",
            "--model.evaluation.stride=32",
            "--model.evaluation.max_tokens=256",
            "--outputs.enabled=true",
            f"--record.output_dir={out}",
            "--record.quiet=true",
        ],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    (out / "stderr.txt").write_text(finished.stderr)
    return out


def test_offline_wandb_run_holds_the_records_aggregates(predicted_run: Path) -> None:
    (record_file,) = (predicted_run / "records").glob("*.json")
    record = json.loads(record_file.read_text())
    (run_dir,) = (predicted_run / "wandb").glob("offline-run-*")
    events = _wandb_events(run_dir)
    summary: dict = {}
    config: dict = {}
    for event in events:
        if event["type"] == "summary":
            summary.update(event["summary"].get("update", {}))
        if event["type"] == "run":
            config.update(event["run"].get("config", {}).get("update", {}))
        if event["type"] == "config":
            config.update(event["config"].get("update", {}))
    for name, stats in record["aggregates"].items():
        if stats["mean"] is not None:  # the dashboard's value is the geometric mean on the log scale
            central = stats["mean"] if stats["geometric_mean"] is None else stats["geometric_mean"]
            assert summary[name] == pytest.approx(central, rel=1e-9), name
            assert summary[f"{name}/mean"] == pytest.approx(stats["mean"], rel=1e-9), name
    assert record["aggregates"]["reference_perplexity"]["geometric_mean"] is not None
    assert summary["corpus_perplexity"] == pytest.approx(record["condition_metrics"]["corpus_perplexity"])
    for key in ("pruning_level", "pruning_method", "agency", "temperature", "seed", "model"):
        assert key in config, key
    assert "agency/withholding_consent" in summary


def test_record_is_complete_and_honest(predicted_run: Path) -> None:
    (record_file,) = (predicted_run / "records").glob("*.json")
    record = json.loads(record_file.read_text())
    assert record["status"] == "complete"
    assert len(record["samples"]) == 4
    assert record["environment"]["torch"] and "git_commit" in record["environment"]
    assert record["agency"]["state_map"] and record["config"]["model"]["agency"]["enabled"]
    for repeat in record["timing"]["repeats"]:
        metrics = repeat["metrics"]
        assert metrics["first_token_latency_s"] < metrics["generation_time_s"]
    assert (predicted_run / "outputs" / f"{record['condition_id']}.txt").is_file()


def test_no_wandb_warning_about_a_setting_nobody_set(predicted_run: Path) -> None:
    """Lightning passes ``anonymous=None``; wandb 0.31 would warn about it in every quiet run."""
    stderr = (predicted_run / "stderr.txt").read_text()
    assert "anonymous" not in stderr, stderr
