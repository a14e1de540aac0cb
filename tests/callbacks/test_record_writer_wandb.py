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
            "--memory.enabled=true",
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


def _summary_and_config(events: list[dict]) -> tuple[dict, dict]:
    summary: dict = {}
    config: dict = {}
    for event in events:
        if event["type"] == "summary":
            summary.update(event["summary"].get("update", {}))
        if event["type"] == "config":
            config.update(event["config"].get("update", {}))
    return summary, config


def test_the_offline_run_carries_the_record_as_an_artifact_and_is_named_for_people(
    predicted_run: Path,
) -> None:
    from callbacks.record_writer import artifact_name

    (record_file,) = (predicted_run / "records").glob("*.json")
    record = json.loads(record_file.read_text())
    (run_dir,) = (predicted_run / "wandb").glob("offline-run-*")
    events = _wandb_events(run_dir)
    artifacts = [e["artifact"] for e in events if e["type"] == "artifact"]
    (artifact,) = [a for a in artifacts if a["type"] == "condition-record"]
    assert artifact["name"] == artifact_name(record["condition_id"])
    (entry,) = artifact["manifest"]["contents"]
    assert entry["path"] == record_file.name
    assert Path(entry["local_path"]).read_bytes() == record_file.read_bytes()  # what 'wandb sync' uploads
    run = next(e["run"] for e in reversed(events) if e["type"] == "run" and e["run"].get("tags"))
    level = record["config"]["model"]["pruning"]["level"]
    assert run["display_name"].startswith(f"{Path(record['config']['model']['model_name']).name} ")
    assert f" {level:g}% agency" in run["display_name"]
    assert {"arm:agency", f"level:{level:g}", "method:entropy", "temperature:0.7"} <= set(run["tags"])


def test_every_dashboard_panel_and_grouping_key_is_in_a_real_runs_summary_and_config(
    predicted_run: Path,
) -> None:
    """The workspace's spec, built offline, names only keys a condition run really has."""
    import torch

    from reporting.dashboard import build_report, build_workspace, specification

    (run_dir,) = (predicted_run / "wandb").glob("offline-run-*")
    summary, config = _summary_and_config(_wandb_events(run_dir))
    spec = specification(build_workspace("me", "proj", "sw1"), build_report("me", "proj", "sw1"))
    sections = spec["workspace"]["spec"]["section"]["panelBankConfig"]["sections"]
    panels = [p["config"] for section in sections for p in section["panels"]]
    summary_keys = {m.split(".", 1)[1] for p in panels for m in p["metrics"]}
    config_keys = {p["xAxis"].split(".")[1] for p in panels} | {
        p["groupBy"].removesuffix(".value") for p in panels if "groupBy" in p
    }
    (runset,) = spec["workspace"]["spec"]["section"]["runSets"]
    config_keys |= {g["name"].removesuffix(".value") for g in runset["grouping"]}
    config_keys |= {c.split(":", 1)[1] for c in runset["runFeed"]["columnOrder"] if c.startswith("config:")}
    unmeasurable = set() if torch.cuda.is_available() else {"peak_cuda_mb"}
    unmeasurable.add("calibration_perplexity")  # arms without agency only; this run is an agency arm
    assert summary_keys - unmeasurable <= set(summary), sorted(summary_keys - set(summary))
    assert config_keys <= set(config), sorted(config_keys - set(config))
    assert {"pruning_level", "arm", "temperature", "condition_id"} <= config_keys
