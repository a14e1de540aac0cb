"""The report's recovery section: every recovered model against itself before recovery, and the share regained."""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import pytest
from synthetic import QUICKSTART, build_records

from record.identity import condition_id, identity_hash
from record.schema import Recovery
from reporting.design import build_design
from reporting.statistics import compute_statistics
from reporting.summary import render_summary

SETTINGS = {"steps": 60, "train": "attention", "learning_rate": 1e-4}


def _recovered(record, factor: float):
    """The same condition after a recovery that divides its pruned levels' reference perplexity by ``factor``."""
    after = copy.deepcopy(record)
    after.config["model"]["recovery"] = {
        "sha256": f"{hash(record.condition_id) & 0xFFFF:064x}",
        "settings": dict(SETTINGS),
        "steps": 60,
    }
    after.condition_id = condition_id(after.config)
    after.identity = identity_hash(after.config)
    after.recovery = Recovery("run/checkpoints/x/last.ckpt", "0" * 64, dict(SETTINGS), 60, 1.0)
    level = record.config["model"]["pruning"]["level"]
    for sample in after.samples:
        if level > 0 and "reference_perplexity" in sample.metrics:
            sample.metrics["reference_perplexity"] /= factor
    return after


def test_recovery_is_compared_with_the_same_conditions_before_and_says_how_much_it_regains() -> None:
    grid = replace(QUICKSTART, temperatures=(0.7,), layers=4, heads=6)
    before = build_records(grid, seed=3)
    records = before + [_recovered(r, factor=4.0) for r in before]
    design = build_design(records, {"model.pruning.level", "model.agency.enabled"})
    assert [s.label() for s in design.series()] == [
        "embedded / entropy_low / recovered=no",
        "embedded / entropy_low / recovered=yes",
    ]
    stats = compute_statistics(design)
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
    after = [_recovered(r, 2.0) for r in before]
    after[0].config["model"]["recovery"]["settings"]["steps"] = 120
    with pytest.raises(DesignError, match="model.recovery.settings.steps"):
        build_design(before + after, {"model.pruning.level", "model.agency.enabled"})
