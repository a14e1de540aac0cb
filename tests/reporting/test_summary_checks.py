"""The checks beside the answers: forced head states are a positive control at 0% (never an A/A), and the headline
states the speed A/A next to the quality A/A."""

from __future__ import annotations

from synthetic import BASELINE, Grid, Noise, agency, build_records

from reporting.design import build_design
from reporting.questions import POSITIVE_CONTROL_FAMILY
from reporting.statistics import compute_statistics
from reporting.summary import render_summary

WITHDRAWN = [{"layer": 0, "head": h, "state": "withdrawn", "consent": True} for h in range(3)]


def _stats(effect: float):
    forced = agency(ppl=lambda level: effect, head_overrides=WITHDRAWN)
    grid = Grid(
        levels=(0.0, 30.0),
        temperatures=(0.7,),
        arms=(BASELINE, forced),
        noise=Noise(unpruned_identical=False),
    )
    return compute_statistics(build_design(build_records(grid, seed=3)))


def test_forced_states_at_0_percent_are_a_positive_control_not_an_a_a() -> None:
    stats = _stats(20.0)
    assert stats.family("aa") == []
    (control,) = stats.family(POSITIVE_CONTROL_FAMILY)
    assert control.level == 0 and control.significant(stats.alpha)
    summary = render_summary(stats, 4, [])
    assert "positive control (forced head states, nothing pruned): detected in 1 of 1" in summary
    assert "detected: the state path and the report can see an effect" in summary


def test_a_positive_control_that_shows_nothing_is_flagged() -> None:
    stats = _stats(1.0)
    (control,) = stats.family(POSITIVE_CONTROL_FAMILY)
    assert not control.significant(stats.alpha)
    assert "NOT detected" in render_summary(stats, 4, [])


def test_the_headline_states_the_speed_a_a_beside_the_quality_a_a() -> None:
    grid = Grid(levels=(0.0, 30.0), temperatures=(0.7,), sessions=3, repeats=2, speed_aa=True)
    stats = compute_statistics(build_design(build_records(grid, seed=1)))
    (headline_aa,) = [line for line in render_summary(stats, 4, []).splitlines() if "**A/A checks:**" in line]
    assert "0%:" in headline_aa
    assert (
        "speed A/A (baseline timed against itself, 30%) ×" in headline_aa and "over 3 sessions" in headline_aa
    )
