"""The report's recovery section: every recovered model against itself before recovery, and the share regained."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from synthetic import QUICKSTART, build_records, recovered

from reporting.design import build_design
from reporting.statistics import compute_statistics
from reporting.summary import render_summary
from reporting.units import REPETITION, Units


def test_a_recovered_model_that_loops_reads_as_hurt_not_helped() -> None:
    """Looping text has a low reference perplexity (it is predictable) but is degenerate: the worst outcome,
    as everywhere else in the report, so a raw perplexity that fell must not read as recovery helping."""
    grid = replace(QUICKSTART, temperatures=(0.7,), levels=(0.0, 30.0), layers=4, heads=6)
    before = build_records(grid, seed=3)
    after = [recovered(r, factor=4.0) for r in before]
    for record in after:
        if record.config["model"]["pruning"]["level"] > 0:
            for sample in record.samples:
                sample.metrics[REPETITION] = 0.9  # every sample loops
    stats = compute_statistics(build_design(before + after, {"model.pruning.level", "model.agency.enabled"}))
    rows = stats.family("recovery")
    assert len(rows) == 2
    assert all(row.reading(stats.alpha) == "recovery hurt" and not row.better() for row in rows)


def test_recovery_is_compared_with_the_same_conditions_before_and_says_how_much_it_regains() -> None:
    grid = replace(QUICKSTART, temperatures=(0.7,), layers=4, heads=6)
    before = build_records(grid, seed=3)
    records = before + [recovered(r, factor=4.0) for r in before]
    design = build_design(records, {"model.pruning.level", "model.agency.enabled"})
    assert [s.label() for s in design.series()] == [
        "embedded / entropy_low / recovered=no",
        "embedded / entropy_low / recovered=yes",
    ]
    stats = compute_statistics(design, Units(degenerate_perplexity=1e12))  # every sample read as written
    rows = stats.family("recovery")
    assert len(rows) == 2 * 3  # two arms x three pruned levels
    for row in rows:
        assert math.exp(row.effect.estimate) == pytest.approx(0.25, rel=1e-9)  # /4 everywhere
        assert row.significant(stats.alpha) and row.better() and row.reading(stats.alpha) == "recovery helped"
        share, low, high = row.regained
        assert 0 < low <= share <= high
    text = render_summary(stats, len(records), [])
    assert "## Recovery after pruning" in text and "pruning loss regained" in text
    assert "Recovered models are answered as their own series" in text  # Q1 and Q4 say so


def test_recovered_records_with_other_recovery_settings_are_not_pooled() -> None:

    from reporting.design import DesignError

    grid = replace(QUICKSTART, temperatures=(0.7,), levels=(0.0, 50.0), layers=4, heads=6)
    before = build_records(grid, seed=4)
    after = [recovered(r, 2.0) for r in before]
    after[0].config["model"]["recovery"]["settings"]["steps"] = 120
    with pytest.raises(DesignError, match="model.recovery.settings.steps"):
        build_design(before + after, {"model.pruning.level", "model.agency.enabled"})
