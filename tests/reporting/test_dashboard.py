"""``dashboard``: the workspace and report specification, built offline from the catalogue and the questions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from record.catalogue import CATALOGUE
from reporting.analyses.registry import QUESTIONS
from reporting.dashboard import CONTROLS_SECTION, dashboard_main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> dict:
    report = tmp_path_factory.mktemp("report")
    (report / "plots").mkdir()
    (report / "summary.md").write_text("# Summary\n\nQ1: no evidence that agency helps.\n", encoding="utf-8")
    (report / "plots" / "metrics_vs_level.png").write_bytes(b"\x89PNG")
    out = report / "dashboard.json"
    dashboard_main(["me/proj", "--sweep", "sw1", "--report", str(report), "--dry-run", str(out)])
    return json.loads(out.read_text(encoding="utf-8"))


def _sections(spec: dict) -> dict[str, list[dict]]:
    sections = spec["workspace"]["spec"]["section"]["panelBankConfig"]["sections"]
    return {s["name"]: [p["config"] for p in s["panels"]] for s in sections}


def test_one_section_per_question_and_one_for_the_control_arms(spec: dict) -> None:
    names = list(_sections(spec))
    assert [n.split(":")[0] for n in names[: len(QUESTIONS)]] == list(QUESTIONS)
    assert all(QUESTIONS[q] in n for q, n in zip(QUESTIONS, names, strict=False))
    assert CONTROLS_SECTION in names
    controls = _sections(spec)[CONTROLS_SECTION]
    assert controls and all(p["groupBy"] == "arm.value" for p in controls)


def test_every_catalogued_metric_has_a_panel_against_the_level_with_an_error_band(spec: dict) -> None:
    panels = [p for section in _sections(spec).values() for p in section]
    plotted = {m.split(".", 1)[1] for p in panels for m in p["metrics"]}
    assert plotted == {m.name for m in CATALOGUE}
    for panel in panels:
        assert panel["xAxis"] == "config.pruning_level.value"
        assert (panel["groupAgg"], panel["groupArea"]) == ("mean", "stderr")
    (runset,) = spec["workspace"]["spec"]["section"]["runSets"]
    assert [g["name"] for g in runset["grouping"]] == ["arm.value", "temperature.value"]
    assert {f["value"] for f in runset["filters"]["filters"]} == {"condition", "sw1"}


def test_the_report_carries_the_summary_and_its_figures(spec: dict) -> None:
    text = json.dumps(spec["report"])
    assert "Q1: no evidence that agency helps." in text and "plots/metrics_vs_level" in text


def test_without_network_the_dashboard_is_one_line_exit_2_and_writes_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "WANDB_CONFIG_DIR": str(tmp_path / "config"), "NETRC": str(tmp_path / "netrc")}
    env.pop("WANDB_API_KEY", None)
    (tmp_path / "cwd").mkdir()
    done = subprocess.run(
        [sys.executable, str(REPO / "cli.py"), "dashboard", "x/y"],
        cwd=tmp_path / "cwd",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: W&B could not save the dashboard of x/y"), lines
    assert list((tmp_path / "cwd").iterdir()) == []


def test_a_bad_target_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        dashboard_main(["just-a-project", "--dry-run", "x.json"])
    assert info.value.code == 2
    assert "allowed: ENTITY/PROJECT" in capsys.readouterr().err
