"""Simulated quickstart runs through the report: the false-positive rate per report without an effect, and the power.

Without a true difference between the arms (A/A, 200 simulated reports at the quickstart's n) at most 5% of
reports show any significant primary effect (contract 14: a reader reads the whole report, not one family); with
a true 10% speed and 20% log-perplexity effect, it is detected in at least 80% of 40 runs.

Each run is the quickstart design (4 levels, 2 arms, 2 temperatures, 24 prompts x 1 iteration, 5 timing
repeats per arm and cell timed side by side) drawn with the noise measured on a real quickstart run
(synthetic.py), written as records into its own run folder and reported through ``reporting.cli.report_main``
exactly as ``pruning-agency report <run> --no-plots --no-wandb --quiet`` would; the test reads the
``statistics.json`` it wrote. Every run is seeded, so the counts below are the same on every machine.

The 10% speed effect is x0.9 on the agency arm's tokens/s. The 20% log-perplexity effect is read as written:
the agency arm's log reference perplexity is 20% higher than the baseline's at each pruned level (with the
quickstart's cell means, log ratios of 0.77 to 1.7 nats). The weaker reading, x1.2 on perplexity itself (a log
ratio of 0.182), is not detectable with 24 prompts and the between-arm noise measured on a real run; its power is
printed by ``test_power_for_a_20_percent_perplexity_ratio_is_printed`` for the record (about 10-20% per level after
the one Holm adjustment over every primary comparison of the report).
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from synthetic import (
    ARM_DIFFERENCE_SD,
    QUICKSTART,
    QUICKSTART_LOG_PPL,
    TPS_PAIRED_RATIO_SD,
    WITHIN_CELL_SD,
    _log_ppl_mean,
    at_pruned_levels,
    build_records,
    growing,
    write_run,
)

from reporting.cli import report_main
from reporting.design import build_design
from reporting.statistics import compute_statistics

RUNS = 40
REQUIRED_DETECTIONS = 32  # 80% of 40
AA_REPORTS = 200
# At a true rate of exactly 5%, more than 16 of 200 reports (8%) happen with probability 0.027 (binomial); at 10%,
# 16 or fewer happen with probability 0.03: the bound separates a kept 5% from the 16% an uncorrected report had.
ALLOWED_FALSE_POSITIVE_REPORTS = 16
SWEPT = {"model.pruning.level", "model.agency.enabled", "model.generation.temperature"}
# The power runs read perplexity uncensored: with the default threshold nearly every 70% sample of both arms is
# degenerate text, a tie at the worst outcome, so no perplexity effect can show there (test_questions.py pins it).
UNCENSORED = ("--degenerate-ppl", "1e12")
QUESTIONS = ("Q1", "Q2", "Q3", "Q4", "Q5")
PRUNED = (30.0, 50.0, 70.0)
PPL, SPEED = "reference_perplexity", "tokens_per_second"
# The head maps are not drawn (--no-plots): a small model shape keeps the records, and reading them, small.
GRID = replace(QUICKSTART, layers=4, heads=6)


def log_perplexity_effect(share: float, growing_to: float | None = None):
    """A multiplicative perplexity effect that raises log perplexity by ``share`` of the cell's own value (the mean
    over the temperatures), at every pruned level, or growing linearly from none at 0% to ``share`` at
    ``growing_to``."""

    def factor(level: float) -> float:
        if level <= 0:
            return 1.0
        scale = share * (level / growing_to if growing_to else 1.0)
        mean_log = sum(_log_ppl_mean(t, level) for t in QUICKSTART_LOG_PPL) / len(QUICKSTART_LOG_PPL)
        return math.exp(scale * mean_log)

    return factor


CONSTANT = GRID.with_effects(ppl=log_perplexity_effect(0.2), speed=at_pruned_levels(0.9))
GROWING = GRID.with_effects(ppl=log_perplexity_effect(0.2, growing_to=70.0), speed=growing(0.9, top=70.0))
RATIO = GRID.with_effects(ppl=at_pruned_levels(1.2), speed=at_pruned_levels(0.9))


def _primary(statistics: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "family": c["family"],
            "role": c["role"],
            "metric": c["metric"],
            "level": c["level"],
            "p_holm": c["p_holm"],
            "estimate": c["effect"]["estimate"],
        }
        for c in statistics["comparisons"]
        if c["role"] == "primary"
    ]


def _simulate(root: Path, grid, runs: int = RUNS) -> list[list[dict[str, Any]]]:
    """Every run's primary comparisons, from the statistics.json ``report`` wrote."""
    result = []
    for seed in range(runs):
        run_dir = root / f"run{seed:02d}"
        write_run(run_dir, grid, seed=seed)
        report_main([str(run_dir), "--no-plots", "--no-wandb", "--quiet", *UNCENSORED])
        result.append(
            _primary(json.loads((run_dir / "report" / "statistics.json").read_text(encoding="utf-8")))
        )
    return result


@pytest.fixture(scope="module")
def constant_runs(tmp_path_factory: pytest.TempPathFactory) -> list[list[dict[str, Any]]]:
    return _simulate(tmp_path_factory.mktemp("constant"), CONSTANT)


@pytest.fixture(scope="module")
def growing_runs(tmp_path_factory: pytest.TempPathFactory) -> list[list[dict[str, Any]]]:
    return _simulate(tmp_path_factory.mktemp("growing"), GROWING)


def _significant(c: dict[str, Any]) -> bool:
    return c["p_holm"] is not None and c["p_holm"] < 0.05


def _detections(
    runs: list[list[dict[str, Any]]], family: str, metric: str, level: float | None, sign: int
) -> int:
    """Runs in which that comparison is significant in the true effect's direction (sign of the log ratio)."""
    count = 0
    for comparisons in runs:
        (row,) = [
            c for c in comparisons if c["family"] == family and c["metric"] == metric and c["level"] == level
        ]
        count += _significant(row) and sign * row["estimate"] > 0
    return count


def _show(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with capsys.disabled():
        print(f"\n{text}")


def test_the_generator_reproduces_the_measured_noise() -> None:
    """Pooled over simulated runs: the spreads the simulations rely on are the ones measured on the real run."""
    arm_diffs, within, ratios = [], [], []
    for seed in range(6):
        records = build_records(GRID, seed=1000 + seed)
        by_cell = {
            (
                r.config["model"]["generation"]["temperature"],
                r.config["model"]["pruning"]["level"],
                r.config["model"]["agency"]["enabled"],
            ): r
            for r in records
        }
        for (temperature, level, enabled), record in by_cell.items():
            if level == 0 or enabled:
                continue
            other = by_cell[(temperature, level, True)]
            base = np.log([s.metrics[PPL] for s in record.samples])
            agency = np.log([s.metrics[PPL] for s in other.samples])
            arm_diffs.append(np.var(agency - base, ddof=1))
            within.append(np.var(base, ddof=1))
            b = {r.repeat: r.metrics[SPEED] for r in record.timing.repeats}
            ratios.append(
                np.var([math.log(r.metrics[SPEED] / b[r.repeat]) for r in other.timing.repeats], ddof=1)
            )
    assert math.sqrt(np.mean(arm_diffs)) == pytest.approx(ARM_DIFFERENCE_SD, rel=0.1)
    assert math.sqrt(np.mean(within)) == pytest.approx(WITHIN_CELL_SD, rel=0.1)
    assert math.sqrt(np.mean(ratios)) == pytest.approx(TPS_PAIRED_RATIO_SD, rel=0.2)


@pytest.mark.slow  # the whole statistics pipeline over many simulated sweeps
def test_without_a_true_difference_at_most_5_percent_of_runs_report_a_primary_effect(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """200 A/A reports (seeds 0..199) through ``compute_statistics`` with the default reading (degenerate text
    included): a report counts when any primary comparison, the primary endpoint or any question's, is
    significant after the one Holm adjustment over all of them. Over 500 further seeds (1000..1499): 19 of 500
    reports (3.8%), each test unadjusted 4-7% (0% at 70%, where both arms' text is degenerate and ties)."""
    reports = []
    for seed in range(AA_REPORTS):
        stats = compute_statistics(build_design(build_records(GRID, seed=seed), SWEPT))
        reports.append([c for c in stats.comparisons if c.role == "primary"])
    assert {c.family for c in reports[0]} == {"primary", *QUESTIONS}  # every question was asked
    flagged = sum(any(c.significant(0.05) for c in run) for run in reports)
    unadjusted: dict[str, list[int]] = {}
    for run in reports:
        for c in run:
            if c.effect.p is not None:
                unadjusted.setdefault(f"{c.family} {c.metric} {c.level}", []).append(c.effect.p < 0.05)
    _show(
        capsys,
        f"A/A: {flagged}/{len(reports)} reports with a significant primary effect; unadjusted rate per test: "
        + ", ".join(f"{k} {np.mean(v):.3f}" for k, v in unadjusted.items()),
    )
    assert flagged <= ALLOWED_FALSE_POSITIVE_REPORTS
    # each test on its own keeps about 5% (none above 10% over 200 reports: 4 binomial sd above 5%)
    assert max(np.mean(v) for v in unadjusted.values()) <= 0.10


@pytest.mark.slow  # the whole statistics pipeline over many simulated sweeps
def test_a_constant_10_percent_speed_effect_is_detected_at_every_pruned_level(
    constant_runs: list[list[dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    found = {level: _detections(constant_runs, "Q2", SPEED, level, -1) for level in PRUNED}
    primary = _detections(constant_runs, "primary", SPEED, None, -1)
    _show(
        capsys,
        f"power, tokens/s x0.9 at every pruned level, Q2: {found}, primary endpoint: {primary} of "
        f"{len(constant_runs)}",
    )
    assert min(found.values()) >= REQUIRED_DETECTIONS and primary >= REQUIRED_DETECTIONS


@pytest.mark.slow  # the whole statistics pipeline over many simulated sweeps
def test_a_constant_20_percent_log_perplexity_effect_is_detected_at_every_pruned_level(
    constant_runs: list[list[dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    found = {level: _detections(constant_runs, "Q2", PPL, level, 1) for level in PRUNED}
    primary = _detections(constant_runs, "primary", PPL, None, 1)
    _show(
        capsys,
        f"power, log reference perplexity +20% at every pruned level, Q2: {found}, primary endpoint: {primary} "
        f"of {len(constant_runs)}",
    )
    assert min(found.values()) >= REQUIRED_DETECTIONS and primary >= REQUIRED_DETECTIONS


@pytest.mark.slow  # the whole statistics pipeline over many simulated sweeps
def test_a_constant_20_percent_log_perplexity_effect_is_detected_by_question_5(
    constant_runs: list[list[dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    found = _detections(constant_runs, "Q5", PPL, None, 1)
    _show(
        capsys,
        f"power, log reference perplexity +20% at every pruned level, Q5: {found} of {len(constant_runs)}",
    )
    assert found >= REQUIRED_DETECTIONS


@pytest.mark.slow  # the whole statistics pipeline over many simulated sweeps
def test_a_speed_effect_growing_with_the_level_is_detected_as_a_slope(
    growing_runs: list[list[dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    found = _detections(growing_runs, "Q1", SPEED, None, -1)
    _show(capsys, f"power, tokens/s from x1 at 0% to x0.9 at 70%, Q1 slope: {found} of {len(growing_runs)}")
    assert found >= REQUIRED_DETECTIONS


@pytest.mark.slow  # the whole statistics pipeline over many simulated sweeps
def test_a_perplexity_effect_growing_with_the_level_is_detected_as_a_slope(
    growing_runs: list[list[dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    found = _detections(growing_runs, "Q1", PPL, None, 1)
    _show(
        capsys,
        f"power, log reference perplexity from +0% at 0% to +20% at 70%, Q1 slope: {found} of "
        f"{len(growing_runs)}",
    )
    assert found >= REQUIRED_DETECTIONS


@pytest.mark.slow  # the whole statistics pipeline over many simulated sweeps
def test_power_for_a_20_percent_perplexity_ratio_is_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The weaker reading, x1.2 on perplexity: measured and printed, not required (about 20-25% per level with 24
    prompts after the report-wide Holm adjustment; the README says what n it would need). It must still point the right way when it is found."""
    runs = _simulate(tmp_path, RATIO, runs=10)
    found = {level: _detections(runs, "Q2", PPL, level, 1) for level in PRUNED}
    wrong = {level: _detections(runs, "Q2", PPL, level, -1) for level in PRUNED}
    _show(capsys, f"power, reference perplexity x1.2 at every pruned level, Q2 (10 runs): {found}")
    assert sum(wrong.values()) == 0
