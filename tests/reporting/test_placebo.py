"""Placebo bands: a random ranking's seeds (and a random protection's) are draws; a named arm is placed in the
band of its draws, never read against one draw."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from synthetic import BASELINE, QUICKSTART, agency, build_records, protected, write_records, write_sweep

from reporting.analyses.placebo import ENOUGH_DRAWS, placebo_bands
from reporting.design import build_design
from reporting.report import ReportOptions, write_report
from reporting.statistics import compute_statistics
from reporting.summary import render_summary
from reporting.units import Units

LEVELS = (0.0, 30.0)
SEEDS = tuple(range(10))


def _records(draws: int = 10, named_value: float = 95.0):
    """A random ranking over ``draws`` seeds whose 30% corpus perplexities are 100 + 10 * seed, and an entropy
    ranking (one seed) at ``named_value``."""
    grid = replace(
        QUICKSTART, levels=LEVELS, temperatures=(0.7,), arms=(BASELINE,), layers=4, heads=6, prompts=4
    )
    random = build_records(replace(grid, method="random", seeds=SEEDS[:draws]))
    named = build_records(replace(grid, method="entropy_low"))
    for record in random:
        if record.config["model"]["pruning"]["level"] == 30.0:
            record.condition_metrics["corpus_perplexity"] = 100.0 + 10 * record.config["model"]["seed"]
    for record in named:
        if record.config["model"]["pruning"]["level"] == 30.0:
            record.condition_metrics["corpus_perplexity"] = named_value
    return random + named


def test_a_named_ranking_is_placed_in_the_band_of_the_random_rankings_draws() -> None:
    design = build_design(_records())
    (band,) = placebo_bands(design, Units())
    draws = [100.0 + 10 * s for s in SEEDS]
    assert band.level == 30.0 and sorted(band.draws) == pytest.approx(draws)
    low, median, high = np.quantile(draws, [0.025, 0.5, 0.975])
    assert (band.low, band.median, band.high) == pytest.approx((low, median, high))
    (named,) = band.named
    assert named.what == "entropy_low ranking" and named.value == pytest.approx(95.0)
    assert named.beats == 1.0  # better than every draw
    (worse,) = placebo_bands(build_design(_records(named_value=145.0)), Units())
    assert worse.named[0].beats == pytest.approx(0.5)  # 150..190: 5 of 10 draws are worse


def test_the_summary_shows_the_band_and_says_when_draws_are_too_few() -> None:
    stats = compute_statistics(build_design(_records()))
    text = render_summary(stats, 0, [])
    section = text.split("## Placebo bands")[1].split("\n## ")[0]
    assert "| 30% | 10 | 145 [102.3, 187.8] | entropy_low ranking 95: beats 100% |" in section
    few = render_summary(compute_statistics(build_design(_records(draws=3))), 0, [])
    assert "(only 3 draws: not a 95% band)" in few and ENOUGH_DRAWS == 10


def test_a_random_protection_is_a_placebo_too_and_the_bands_reach_statistics_json(tmp_path) -> None:
    grid = replace(
        QUICKSTART,
        levels=LEVELS,
        temperatures=(0.7,),
        arms=(BASELINE, protected("random"), protected("gradient"), agency()),
        seeds=SEEDS,
        layers=4,
        heads=6,
        prompts=4,
    )
    records = build_records(grid)
    for record in records:
        pruning = record.config["model"]["pruning"]
        if pruning["level"] == 30.0 and pruning.get("protect") == "random":
            record.condition_metrics["corpus_perplexity"] = 100.0 + 10 * record.config["model"]["seed"]
    run = tmp_path / "run"
    write_records(run, records)
    write_sweep(run, {"model.pruning.level": {"values": list(LEVELS)}})
    result = write_report([run], tmp_path / "out", ReportOptions(plots=False))
    payload = json.loads(result.statistics_path.read_text(encoding="utf-8"))
    (band,) = payload["descriptions"]["placebo"]
    assert band["placebo"].startswith("random protection") and len(band["draws"]) == 10
    assert {p["what"] for p in band["named"]} >= {"agency", "baseline"}
    assert all(math.isfinite(p["value"]) and 0 <= p["beats"] <= 1 for p in band["named"])
