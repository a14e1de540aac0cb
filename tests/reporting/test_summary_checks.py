"""The checks beside the answers: forced head states are a positive control at 0% (never an A/A), and the headline
states the speed A/A next to the quality A/A."""

from __future__ import annotations

from synthetic import BASELINE, Grid, Noise, agency, build_records

from reporting.analyses.aa import POSITIVE_CONTROL_FAMILY
from reporting.design import build_design
from reporting.statistics import compute_statistics
from reporting.summary import render_summary

WITHDRAWN = [{"layer": 0, "head": h, "state": "withdrawn", "consent": True} for h in range(3)]


def _stats(effect: float, prompts: int = 24):
    forced = agency(ppl=lambda level: effect, head_overrides=WITHDRAWN)
    grid = Grid(
        levels=(0.0, 30.0),
        temperatures=(0.7,),
        arms=(BASELINE, forced),
        noise=Noise(unpruned_identical=False),
        prompts=prompts,
    )
    return compute_statistics(build_design(build_records(grid, seed=3)))


def test_forced_states_at_0_percent_are_a_positive_control_not_an_a_a() -> None:
    stats = _stats(20.0)
    assert stats.family("aa") == []
    controls = stats.family(POSITIVE_CONTROL_FAMILY)
    assert [c.level for c in controls] == [0.0, 30.0] and all(c.significant(stats.alpha) for c in controls)
    summary = render_summary(stats, 4, [])
    assert "positive control (forced head states; 0%, 30%): detected in 2 of 2" in summary
    assert "head states forced by head_overrides, 30% pruned): reference perplexity ×" in summary
    assert "detected: the state path and the report can see an effect" in summary


def test_a_positive_control_that_shows_nothing_is_flagged() -> None:
    stats = _stats(1.0)
    assert not any(c.significant(stats.alpha) for c in stats.family(POSITIVE_CONTROL_FAMILY))
    assert "NOT detected" in render_summary(stats, 4, [])


def test_a_positive_control_too_small_to_detect_anything_is_inconclusive_not_a_suspect_state_path() -> None:
    """Four prompts cannot reach significance (smallest Holm p 0.25 over two rows): the control says so."""
    summary = render_summary(_stats(20.0, prompts=4), 4, [])
    assert "NOT detected" not in summary
    assert "inconclusive: with 4 prompts no test could reach significance" in summary


def test_the_headline_states_the_speed_a_a_beside_the_quality_a_a() -> None:
    grid = Grid(levels=(0.0, 30.0), temperatures=(0.7,), sessions=3, repeats=2, speed_aa=True)
    stats = compute_statistics(build_design(build_records(grid, seed=1)))
    (headline_aa,) = [line for line in render_summary(stats, 4, []).splitlines() if "**A/A checks:**" in line]
    assert "0%:" in headline_aa
    assert (
        "speed A/A (baseline timed against itself, 30%) ×" in headline_aa and "over 3 sessions" in headline_aa
    )


def test_an_arm_with_forced_states_answers_no_question() -> None:
    """Forcing the states of chosen heads measures the state path, not the agency layer: the positive control's arm
    has no primary endpoint, question, attribution or strategy row, and no answer reads it as agency's effect."""
    stats = _stats(20.0)
    asked = ("primary", "Q1", "Q2", "Q3", "Q4", "Q5")
    assert [c for c in stats.comparisons if c.family in asked] == []
    assert stats.positive_controls == ["embedded / entropy_low / agency"]
    summary = render_summary(stats, 4, [])
    (answer,) = [line for line in summary.splitlines() if line.startswith("- **Primary answer:**")]
    assert "force head states (positive controls: embedded / entropy_low / agency)" in answer
    assert "**Answer:** not asked" in summary
    assert not [line for line in summary.splitlines() if line.startswith("**Answer:** agency")]
    assert "**Answer:** agency degrades less" not in summary


def test_beside_the_agency_arm_only_the_forced_arm_is_left_out_of_the_questions() -> None:
    main = agency(ppl=lambda level: 1.0)
    grid = Grid(levels=(0.0, 30.0), temperatures=(0.7,), arms=(BASELINE, main))
    design = build_design(build_records(grid, seed=3))
    (series,) = design.series()
    assert design.primary_arms(series) == design.agency_arms(series) and not design.positive_control_arms()
    stats = compute_statistics(design)
    assert stats.family("primary") and not stats.positive_controls
