"""Replication across models: each model its own estimate, one verdict per answer."""

from __future__ import annotations

from dataclasses import replace

from synthetic import QUICKSTART, at_pruned_levels, build_records

from reporting.analyses.replication import replications
from reporting.design import build_design
from reporting.statistics import compute_statistics
from reporting.summary import render_summary


def _two_models(first: float, second: float):
    grid = replace(QUICKSTART, temperatures=(0.7,), layers=4, heads=6)
    a = build_records(replace(grid, model_name="embedded").with_effects(ppl=at_pruned_levels(first)), seed=1)
    b = build_records(
        replace(grid, model_name="gemma3-270m").with_effects(ppl=at_pruned_levels(second)), seed=2
    )
    return compute_statistics(build_design(a + b))


def _primary_verdict(stats) -> str:
    (primary,) = [
        r
        for r in replications(stats)
        if r.answer.startswith("primary:") and r.rows[0].metric == "reference_perplexity"
    ]
    assert [c.series.model for c in primary.rows] == ["embedded", "gemma3-270m"]
    return primary.verdict


def test_the_same_effect_on_both_models_replicates() -> None:
    assert _primary_verdict(_two_models(0.6, 0.6)) == "replicates"


def test_opposite_effects_differ_and_no_effect_cannot_be_told() -> None:
    assert _primary_verdict(_two_models(0.6, 1.6)) == "differs"
    assert _primary_verdict(_two_models(1.0, 1.0)) == "cannot tell at this n"


def test_the_summary_names_each_models_effect_and_the_verdict_and_one_model_has_no_section() -> None:
    text = render_summary(_two_models(0.6, 0.6), 0, [])
    section = text.split("## Replication across models")[1].split("\n## ")[0]
    assert "embedded ×" in section and "gemma3-270m ×" in section and "**replicates**" in section
    grid = replace(QUICKSTART, temperatures=(0.7,), layers=4, heads=6)
    alone = render_summary(compute_statistics(build_design(build_records(grid))), 0, [])
    assert "## Replication across models" not in alone


def test_the_same_contrast_in_two_series_is_two_answers_each_named_by_its_series() -> None:
    """A grid that crosses a setting with the arms (here a swept calibration window) asks each answer once per
    series: the rows must say which, or two different answers read as one repeated."""
    key = "model.calibration.window"
    grid = replace(QUICKSTART, temperatures=(0.7,), layers=4, heads=6)
    records = []
    for seed, model in ((1, "embedded"), (2, "gemma3-270m")):
        for window in (64, 128):
            one = replace(grid, model_name=model, config=((key, window),)).with_effects(
                ppl=at_pruned_levels(0.6)
            )
            records += build_records(one, seed=seed + window)
    stats = compute_statistics(build_design(records, swept=[key]))
    primary = [
        r.answer
        for r in replications(stats)
        if r.answer.startswith("primary:") and "over the pruned" in r.answer
    ]
    assert len(primary) == len(set(primary)) >= 2
    assert any(a.endswith("[window=64]") for a in primary) and any(
        a.endswith("[window=128]") for a in primary
    )
