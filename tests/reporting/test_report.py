"""``report`` end to end: files written, exit codes and messages of the command line, W&B, the figures."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from synthetic import QUICKSTART, Grid, write_run

from reporting import plots
from reporting.cli import report_main
from reporting.design import build_design
from reporting.plot_data import PlotData
from reporting.records import load_records
from reporting.report import ReportResult, json_safe, write_report
from reporting.statistics import compute_statistics

GRID = replace(QUICKSTART, layers=4, heads=6)
SMALL = Grid(levels=(0.0, 30.0), temperatures=(0.7,), prompts=6, repeats=3, layers=4, heads=6)
SERIES = "embedded-entropy_low"
PLOTS = {
    "answers.png",
    f"summary_{SERIES}.png",
    f"metrics_vs_level_{SERIES}.png",
    f"heatmap_{SERIES}.png",
    f"tradeoff_{SERIES}.png",
    f"agency_states_{SERIES}.png",
    f"head_pruning_{SERIES}.png",
    f"radar_{SERIES}_T0.7.png",
    f"radar_{SERIES}_T1.png",
}


def _strict_json(path: Path) -> dict[str, Any]:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{path} holds {constant}")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def _exit(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    with pytest.raises(SystemExit) as stop:
        report_main(argv)
    return stop.value.code, capsys.readouterr().err.strip().splitlines()


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory) -> ReportResult:
    run = tmp_path_factory.mktemp("full") / "run"
    write_run(run, GRID)
    return write_report([run], run / "report")


def test_a_full_report_writes_statistics_summary_and_every_figure_the_data_allow(
    full_report: ReportResult,
) -> None:
    out = full_report.out_dir
    assert {p.name for p in full_report.plot_paths} == PLOTS
    assert all(p.stat().st_size > 10_000 for p in full_report.plot_paths)
    assert full_report.notes == [
        "plot skipped: ablation: no agency component was switched off",
        "plot skipped: frontier: no ranking arms with calibration-text and evaluation scores",
    ]
    payload = _strict_json(full_report.statistics_path)
    assert (
        payload["inputs"]["n_records"] == 16 == full_report.n_records and payload["inputs"]["problems"] == []
    )
    assert len(payload["inputs"]["records"]) == 16 and payload["inputs"]["compared_keys"] == []
    assert sorted(payload["plots"]) == sorted(f"plots/{name}" for name in PLOTS)
    assert payload["plots_skipped"] == full_report.notes
    summary = full_report.summary_path.read_text(encoding="utf-8")
    assert (
        summary.startswith("# Pruning comparison with agency: summary")
        and "16 records in 16 cells" in summary
    )
    assert "## Figures not drawn" in summary and "None: every record file was read and used." in summary
    assert set(full_report.significant_primary) == {"Q1", "Q2", "Q3", "Q4", "Q5"}
    assert full_report.table.splitlines()[0].split()[:4] == ["series", "T", "level", "arm"]
    assert out == full_report.statistics_path.parent


def test_json_safe_writes_plain_json() -> None:
    value = {
        "a": (1, 2.5),
        "b": float("nan"),
        "c": [float("inf"), np.float64(0.5), np.int64(3)],
        "d": Path("x"),
    }
    assert json_safe(value) == {"a": [1, 2.5], "b": None, "c": [None, 0.5, 3], "d": "x"}


# -- the command line ---------------------------------------------------------------------------------------
def test_report_main_writes_into_the_first_run_folder_and_warns_about_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_run(tmp_path / "a", SMALL)
    write_run(tmp_path / "b", SMALL)  # the same conditions again: duplicates, named, counted once
    report_main([str(tmp_path / "a"), str(tmp_path / "b"), "--no-plots", "--no-wandb"])
    captured = capsys.readouterr()
    assert (tmp_path / "a" / "report" / "summary.md").is_file() and not (tmp_path / "b" / "report").exists()
    warnings = [line for line in captured.err.strip().splitlines() if not line.startswith("report: ")]
    assert len(warnings) == 4 and all(
        w.startswith("warning: record ") and "duplicates" in w for w in warnings
    )
    assert "reference perplexity" in captured.out  # the cell table
    assert captured.out.strip().endswith("statistics.json")
    report_main(
        [str(tmp_path / "a"), "--no-plots", "--no-wandb", "--quiet", "--out", str(tmp_path / "elsewhere")]
    )
    assert (tmp_path / "elsewhere" / "statistics.json").is_file()
    assert "series" not in capsys.readouterr().out  # --quiet: no table


def test_exit_1_with_one_line_naming_the_unreadable_files_when_every_record_is_corrupt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = write_run(tmp_path / "run", SMALL)
    for path in paths:
        path.write_text(path.read_text()[:200])
    code, lines = _exit([str(tmp_path / "run"), "--no-plots", "--no-wandb"], capsys)
    assert code == 1 and len(lines) == 1
    assert lines[0].startswith("error: no usable record among 4 files; unreadable: ")
    assert all(str(p) in lines[0] for p in paths)
    assert not (tmp_path / "run" / "report").exists()


def test_exit_1_when_there_is_no_record_file_or_nothing_matches_where(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty" / "records").mkdir(parents=True)
    code, lines = _exit([str(tmp_path / "empty"), "--no-wandb"], capsys)
    assert code == 1 and lines == [f"error: no record files in {tmp_path / 'empty' / 'records'}"]
    write_run(tmp_path / "run", SMALL)
    code, lines = _exit([str(tmp_path / "run"), "--no-wandb", "--where", "model.pruning.mode=remove"], capsys)
    assert code == 1 and lines == ["error: no record matches --where model.pruning.mode=remove"]


def test_exit_2_for_records_that_may_not_be_pooled(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    write_run(run, SMALL)
    write_run(run, replace(SMALL, config=(("model.generation.top_p", 0.9),)), sweep=False)
    code, lines = _exit([str(run), "--no-plots", "--no-wandb"], capsys)
    assert code == 2 and len(lines) == 1
    assert re.match(
        r"error: records differ in settings that are not compared \(model\.generation\.top_p: "
        r"(1, 0\.9|0\.9, 1)\); they are not pooled\.",
        lines[0],
    )
    # either way of resolving it works
    report_main([str(run), "--no-plots", "--no-wandb", "--quiet", "--where", "model.generation.top_p=0.9"])
    assert _strict_json(run / "report" / "statistics.json")["inputs"]["n_records"] == 4
    report_main([str(run), "--no-plots", "--no-wandb", "--quiet", "--split-by", "model.generation.top_p"])
    payload = _strict_json(run / "report" / "statistics.json")
    assert (
        payload["inputs"]["compared_keys"] == ["model.generation.top_p"]
        and payload["inputs"]["n_records"] == 8
    )


def test_exit_2_for_arguments_that_cannot_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = _exit([str(tmp_path / "nowhere"), "--no-wandb"], capsys)
    assert code == 2 and len(lines) == 1 and "has no records/ folder" in lines[0]
    write_run(tmp_path / "run", SMALL)
    code, lines = _exit([str(tmp_path / "run"), "--no-wandb", "--degenerate-ppl", "1"], capsys)
    assert code == 2 and lines == ["error: --degenerate-ppl 1 is invalid; allowed: a perplexity > 1"]
    code, lines = _exit([str(tmp_path / "run"), "--no-wandb", "--where", "model.pruning.level"], capsys)
    assert code == 2 and len(lines) == 1 and "KEY=VALUE" in lines[0]


def test_the_degenerate_threshold_reaches_the_statistics(tmp_path: Path) -> None:
    write_run(tmp_path / "run", SMALL)
    report_main([str(tmp_path / "run"), "--no-plots", "--no-wandb", "--quiet", "--degenerate-ppl", "50"])
    payload = _strict_json(tmp_path / "run" / "report" / "statistics.json")
    assert payload["degenerate_perplexity"] == 50.0
    assert sum(c["degenerate"][0] for c in payload["cells"]) > 0


def test_the_wandb_run_is_written_under_the_first_run_folder_not_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("a", "b"):
        write_run(
            tmp_path / name, replace(SMALL, config=(("model.generation.top_p", 0.9 if name == "b" else 1.0),))
        )
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    report_main(
        [
            str(tmp_path / "a"),
            str(tmp_path / "b"),
            "--no-plots",
            "--quiet",
            "--split-by",
            "model.generation.top_p",
        ]
    )
    assert "could not be logged" not in capsys.readouterr().err
    assert list(cwd.iterdir()) == []
    assert list((tmp_path / "a" / "wandb").glob("offline-run-*"))
    assert not (tmp_path / "b" / "wandb").exists()


def test_no_wandb_run_without_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_run(tmp_path / "run", SMALL)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    report_main([str(tmp_path / "run"), "--no-plots", "--quiet", "--no-wandb"])
    monkeypatch.setenv("WANDB_MODE", "disabled")
    report_main([str(tmp_path / "run"), "--no-plots", "--quiet"])
    assert not list(tmp_path.rglob("wandb"))


# -- the figures ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def plot_data(tmp_path_factory: pytest.TempPathFactory) -> PlotData:
    run = tmp_path_factory.mktemp("plots") / "run"
    write_run(run, GRID)
    loaded = load_records([run])
    return PlotData(compute_statistics(build_design(loaded.records, loaded.swept_keys)))


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Figures the plotting functions finish, kept open for inspection instead of saved."""
    figures: list[Any] = []

    def keep(fig: Any, path: Path) -> Path:
        figures.append(fig)
        return path

    monkeypatch.setattr(plots, "_save", keep)
    yield figures
    for fig in figures:
        plots._pyplot().close(fig)


@pytest.mark.parametrize(
    ("metric", "scale"),
    [
        ("reference_perplexity", "log"),
        ("corpus_perplexity", "log"),
        ("tokens_per_second", "log"),
        ("distinct_2", "linear"),
    ],
)
def test_perplexity_and_speed_are_drawn_on_a_log_axis(plot_data: PlotData, metric: str, scale: str) -> None:
    plt = plots._pyplot()
    fig, ax = plt.subplots()
    series = plot_data.series()[0]
    assert plots._draw_arms(ax, plot_data, series, metric, plot_data.temperatures(series))
    assert ax.get_yscale() == scale
    plt.close(fig)


def test_the_summary_figure_has_the_curves_and_the_answers_panel(
    plot_data: PlotData, drawn: list[Any], tmp_path: Path
) -> None:
    series = plot_data.series()[0]
    plots.summary_figure(plot_data, series, tmp_path)
    (fig,) = drawn
    ppl, speed, corpus, answers = fig.axes[:4]
    assert ppl.get_yscale() == speed.get_yscale() == corpus.get_yscale() == "log"
    assert "reference perplexity" in ppl.get_title()
    assert answers.get_title().startswith("answers:") and answers.get_xscale() == "log"
    labels = [t.get_text() for t in answers.get_yticklabels()]
    # every primary ratio (perplexity, speed); Q5's diversity distances are differences, not on this log axis
    primary = [
        c
        for c in plot_data.stats.comparisons
        if c.family in ("Q1", "Q2", "Q3", "Q4", "Q5") and c.kind == "ratio"
    ]
    assert len(labels) == len(primary) == 14
    assert {
        "Q1 reference perplexity",  # the step into pruning is secondary now: not an answer
        "Q1 tokens/s",
        "Q2 tokens/s 30%",
        "Q2 reference perplexity 70%",
        "Q3 reference perplexity 50%",
        "Q4 tokens/s",
        "Q5 reference perplexity",
    } <= set(labels)


def test_the_level_figure_uses_log_axes_for_perplexity_only(
    plot_data: PlotData, drawn: list[Any], tmp_path: Path
) -> None:
    plots.metrics_vs_level(plot_data, plot_data.series()[0], tmp_path)
    (fig,) = drawn
    scales = {ax.get_title().split(" (")[0]: ax.get_yscale() for ax in fig.axes if ax.get_title()}
    assert scales["reference perplexity"] == scales["corpus perplexity"] == scales["tokens/s"] == "log"
    assert scales["distinct-2"] == scales["repetition rate"] == "linear"


def test_the_answers_figure_has_one_panel_per_question(
    plot_data: PlotData, drawn: list[Any], tmp_path: Path
) -> None:
    plots.answers_figure(plot_data, tmp_path)
    (fig,) = drawn
    assert [ax.get_title()[:3] for ax in fig.axes] == ["Q1.", "Q2.", "Q3.", "Q4.", "Q5.", "Q5."]
    assert [ax.get_xscale() for ax in fig.axes] == ["log"] * 5 + ["linear"]  # Q5's diversity distances
    assert "distance to the unpruned model" in fig.axes[-1].get_title()


def test_a_figure_without_data_is_a_note_not_an_error(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_run(run, replace(SMALL, levels=(30.0,)))
    loaded = load_records([run])
    design = build_design(loaded.records, loaded.swept_keys)
    outcome = plots.make_plots(design, compute_statistics(design), tmp_path / "plots")
    assert any("radar" in note and "0%" in note for note in outcome.notes)
    assert outcome.paths and all(p.is_file() for p in outcome.paths)


@pytest.mark.parametrize(
    ("option", "typed", "meant"),
    [
        ("--split-by", "model.generation.top_q", "model.generation.top_p"),
        ("--where", "model.pruning.mdoe=remove", "model.pruning.mode"),
    ],
)
def test_exit_2_naming_a_split_or_where_key_no_record_has_before_anything_is_written(
    option: str, typed: str, meant: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    write_run(run, SMALL)
    code, lines = _exit([str(run), "--no-wandb", option, typed], capsys)
    key = typed.split("=", 1)[0]
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(
        f"error: {option} key '{key}' is not a config key of these records (did you mean '{meant}'?); allowed: "
    )
    allowed = lines[0].split("; allowed: ", 1)[1].split(", ")
    assert meant in allowed and "model.pruning.level" in allowed and key not in allowed
    assert not (run / "report").exists()


@pytest.mark.slow  # a real local sweep of 4 conditions through the command line, then its report
def test_a_local_sweep_times_each_cell_in_three_counterbalanced_sessions_and_its_report_shows_the_speed_aa(
    tiny_gpt2_dir: Path, tiny_prompt_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from run_helpers import tiny_sweep

    import cli
    from record.storage import read_record

    monkeypatch.setenv("WANDB_MODE", "disabled")
    parameters = {
        "model.pruning.level": {"values": [0, 50]},
        "model.agency.enabled": {"values": [False, True]},
    }
    sweep_file = tiny_sweep(tmp_path / "sweep", tiny_gpt2_dir, tiny_prompt_file, parameters)
    run = tmp_path / "run"
    cli.main(["sweep", str(sweep_file), "--output_dir", str(run), "--quiet"])
    found = [read_record(p) for p in sorted((run / "records").glob("*.json"))]
    assert len(found) == 4
    for record in found:
        timed = record.timing.arms
        sessions = sorted({r.session for r in record.timing.repeats})
        assert record.timing.schedule == "interleaved" and len(sessions) >= 3
        for session in sessions:
            positions = sorted(r.position for r in record.timing.repeats if r.session == session)
            assert positions == sorted(list(range(len(timed))) * (len(positions) // len(timed)))
    (holder,) = [r for r in found if r.speed_aa is not None]
    assert (
        holder.config["model"]["pruning"]["level"] == 50 and not holder.config["model"]["agency"]["enabled"]
    )
    cli.main(["report", str(run), "--no-plots"])
    summary = (run / "report" / "summary.md").read_text(encoding="utf-8")
    aa = summary.split("## A/A check")[1].split("\n## ")[0]
    line = next(x for x in aa.splitlines() if x.startswith("Speed A/A"))
    assert "baseline vs itself tokens/s ×" in line and "over 3 sessions" in line
    q2 = summary.split("## 2.")[1].split("\n## ")[0]
    assert "n = 3 timing passes timed side by side" in q2  # one temperature x 3 passes at 50%
