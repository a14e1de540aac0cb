"""write_report end to end on synthetic grids, and logging to a stand-in wandb."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
from reporting_synthetic import write_grid

from reporting.report import ReportResult, json_safe, log_report_to_wandb, write_report

FULL_GRID_PLOTS = {
    "metrics_vs_level_gpt2_entropy_T0.7.png",
    "metrics_vs_level_gpt2_entropy_T1.png",
    "radar_gpt2_entropy_T0.7.png",
    "radar_gpt2_entropy_T1.png",
    "heatmap_gpt2_entropy.png",
    "summary_gpt2_entropy.png",
    "tradeoff_gpt2_entropy.png",
    "relative_improvement_gpt2_entropy.png",
    "agency_states_gpt2_entropy.png",
    "head_pruning_gpt2.png",
}
AGENCY_ONLY_PLOTS = {
    "heatmap_gpt2_entropy.png",
    "relative_improvement_gpt2_entropy.png",
    "agency_states_gpt2_entropy.png",
}
PLACEHOLDERS = ("TODO", "TBD", "placeholder", "lorem", "XXX", "nan")


def _strict_json(path: Path) -> dict:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{path} holds {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory) -> ReportResult:
    root = tmp_path_factory.mktemp("full")
    write_grid(root / "run")
    return write_report([root / "run"], root / "report")


def test_full_grid_writes_statistics_summary_and_every_plot(full_report: ReportResult) -> None:
    out = full_report.out_dir
    assert full_report.statistics_path == out / "statistics.json"
    assert full_report.summary_path == out / "summary.md"
    assert full_report.problems == [] and full_report.notes == [] and full_report.n_records == 16
    written = {p.name for p in (out / "plots").glob("*.png")}
    assert written == FULL_GRID_PLOTS == {p.name for p in full_report.plot_paths}
    for path in full_report.plot_paths:
        assert path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_statistics_json_is_strict_and_complete(full_report: ReportResult) -> None:
    stats = _strict_json(full_report.statistics_path)
    assert stats["inputs"]["n_records"] == 16
    assert len(stats["cells"]) == 16
    assert {"paired_wilcoxon", "paired_ttest", "slope_difference", "temperature"} <= set(stats["families"])
    row = stats["paired"][0]
    assert {"p_wilcoxon_holm", "p_ttest_holm", "relative_gain", "significant"} <= set(row)
    assert {"mean_difference", "ci_low", "ci_high", "p_wilcoxon", "p_ttest"} <= set(row["test"])
    corpus = stats["cells"][0]["condition"]["corpus_perplexity"]
    assert corpus["n"] == 1 and corpus["ci_low"] is None  # one record: no interval, said as null
    assert stats["cells"][-1]["agency"]["violations"] == {
        "gate_on_while_withdrawn": 0,
        "pruned_without_consent": 0,
    }


def test_summary_answers_the_five_questions_without_placeholders(full_report: ReportResult) -> None:
    summary = full_report.summary_path.read_text()
    for heading in ("## 1.", "## 2.", "## 3.", "## 4.", "## 5.", "## Cell means ± 95% CI"):
        assert heading in summary
    assert summary.count("**Answer") == 5
    for word in PLACEHOLDERS:
        assert word not in summary


def test_grid_without_agency_still_writes_the_rest(tmp_path: Path) -> None:
    write_grid(tmp_path / "run", arms=(False,))
    result = write_report([tmp_path / "run"], tmp_path / "report")
    written = {p.name for p in (tmp_path / "report" / "plots").glob("*.png")}
    assert written == FULL_GRID_PLOTS - AGENCY_ONLY_PLOTS
    assert all(p.stat().st_size > 1000 for p in result.plot_paths)
    assert len(result.notes) == 3 and all(n.startswith("plot skipped") for n in result.notes)
    summary = result.summary_path.read_text()
    assert "No series has both a baseline and an agency arm" in summary and "## Figures not drawn" in summary
    assert _strict_json(result.statistics_path)["paired"] == []


def test_no_unpruned_level_skips_radar_with_a_note(tmp_path: Path) -> None:
    write_grid(tmp_path / "run", temperatures=(0.7,), levels=(30, 70))
    result = write_report([tmp_path / "run"], tmp_path / "report")
    assert not any(p.name.startswith("radar") for p in result.plot_paths)
    assert any("radar" in n and "unpruned" in n for n in result.notes)


def test_empty_input_reports_problems_and_does_not_crash(tmp_path: Path) -> None:
    result = write_report([tmp_path / "missing"], tmp_path / "report")
    assert result.plot_paths == [] and result.n_records == 0
    assert "no records/ folder" in result.problems[0]
    assert "No records were loaded, so no temperature can be compared." in result.summary_path.read_text()


def test_json_safe_turns_non_finite_into_null() -> None:
    assert json_safe({"a": float("nan"), "b": (1, float("inf")), 3: Path("x")}) == {
        "a": None,
        "b": [1, None],
        "3": "x",
    }


def test_log_report_to_wandb_uses_report_job_type(
    full_report: ReportResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: dict = {}

    class Run:
        summary: dict = {}

        def log(self, payload: dict) -> None:
            calls["logged"] = payload

        def finish(self) -> None:
            calls["finished"] = True

    fake = types.SimpleNamespace(
        init=lambda **kwargs: calls.setdefault("init", kwargs) and Run(),
        Table=lambda columns, data: ("table", columns, data),
        Image=lambda path: ("image", path),
    )
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    log_report_to_wandb(full_report, group="sweep-1", project="pruning-agency")
    assert calls["init"]["job_type"] == "report" and calls["init"]["group"] == "sweep-1"
    assert calls["init"]["project"] == "pruning-agency" and calls["init"]["mode"] == "offline"
    images = [k for k in calls["logged"] if k.startswith("plots/")]
    assert len(images) == len(FULL_GRID_PLOTS)
    kind, columns, rows = calls["logged"]["cell_statistics"]
    assert kind == "table" and "mean" in columns and len(rows) > 16
    assert calls["finished"]


def test_log_report_without_wandb_is_a_no_op(
    full_report: ReportResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # import now raises ImportError
    assert log_report_to_wandb(full_report, group=None, project="p") is None
