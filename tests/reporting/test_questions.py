"""The primary endpoint and the five questions: pre-specified comparisons on the pruned levels, Holm-adjusted together
(one error rate per report); secondary and exploratory families apart."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace

import pytest
from synthetic import AGENCY, BASELINE, QUICKSTART, agency, at_pruned_levels, build_records, growing

from reporting.analyses.corpus import CORPUS_FAMILY
from reporting.analyses.damage_by_temperature import DAMAGE_BY_TEMPERATURE
from reporting.analyses.q3_temperature import question_3
from reporting.analyses.q5_quality_metrics import quality_metrics
from reporting.analyses.registry import PRIMARY_FAMILIES as CONFIRMATORY
from reporting.analyses.registry import QUESTIONS
from reporting.comparison import SESSION_UNITS, SESSIONS_TEST, shown
from reporting.design import Arm, build_design
from reporting.estimators import SIGN_FLIP, WINDOW_TEST, holm
from reporting.statistics import _adjust, compute_statistics
from reporting.summary import render_summary
from reporting.units import Units

GRID = replace(QUICKSTART, layers=4, heads=6)
# The quickstart's timing layout: 3 sessions per cell spread over the sweep, 2 counterbalanced rounds each.
SESSIONS = replace(GRID, sessions=3, repeats=2)
SWEPT = {"model.pruning.level", "model.agency.enabled", "model.generation.temperature"}
PPL, SPEED = "reference_perplexity", "tokens_per_second"
DIVERSITY = ["distinct_1", "distinct_2", "distinct_3", "type_token_ratio", "repetition_rate"]


def _stats(grid=GRID, seed: int = 0, units: Units | None = None):
    return compute_statistics(build_design(build_records(grid, seed=seed), SWEPT), units)


@pytest.fixture(scope="module")
def quickstart():
    return _stats()


def _rows(stats, family: str) -> list[tuple[str, float | None]]:
    return [(c.metric, c.level) for c in stats.family(family)]


def test_every_question_has_its_pre_specified_primary_comparisons(quickstart) -> None:
    assert list(QUESTIONS) == ["Q1", "Q2", "Q3", "Q4", "Q5"]
    assert CONFIRMATORY == ("primary", "Q1", "Q2", "Q3", "Q4", "Q5", "attribution-layer")
    # the slope over the pruned levels, then the step from 0% to the first pruned level on its own
    assert _rows(quickstart, "Q1") == [(PPL, None), (SPEED, None)]
    assert "over the pruned levels" in quickstart.family("Q1")[0].contrast
    # the step into pruning repeats Q2 at 30% when the arms tie at 0%: secondary, not counted twice in Holm
    assert _rows(quickstart, "Q1-step") == [(PPL, 30.0), (SPEED, 30.0)]
    assert quickstart.family("Q1-step")[0].contrast == "agency effect at 30% over at 0%"
    assert {c.role for c in quickstart.family("Q1-step")} == {"secondary"}
    assert _rows(quickstart, "Q2") == [(m, lv) for lv in (30.0, 50.0, 70.0) for m in (PPL, SPEED)]  # not 0%
    assert _rows(quickstart, "Q3") == [(PPL, 30.0), (PPL, 50.0), (PPL, 70.0)]
    assert _rows(quickstart, "Q4") == [(PPL, 70.0), (SPEED, 70.0)]
    assert {c.contrast for c in quickstart.family("Q4")} == {
        "agency effect at 70% over at 30%"
    }  # not over 0%
    assert _rows(quickstart, "Q5") == [(m, None) for m in [PPL, *DIVERSITY]] and quality_metrics() == [
        PPL,
        *DIVERSITY,
    ]
    assert _rows(quickstart, "primary") == [(PPL, None), (SPEED, None)]
    for family in ("primary", *QUESTIONS):
        assert {(c.arm, c.other) for c in quickstart.family(family)} == {(Arm("agency"), Arm("baseline"))}
        assert all(c.effect.tested for c in quickstart.family(family))


def test_the_units_of_each_primary_comparison(quickstart) -> None:
    q1 = {c.metric: c for c in quickstart.family("Q1") if c.level is None}
    assert q1[PPL].units == "prompts" and q1[PPL].effect.n == 24 and q1[PPL].scale == 10.0
    # 3 pruned levels x 2 temperatures x 1 session (its 5 repeats averaged): the 0% level is not in the slope
    assert q1[SPEED].units == "(level, timing pass) pairs timed side by side" and q1[SPEED].effect.n == 6
    primary = {c.metric: c for c in quickstart.family("primary")}
    assert primary[PPL].units == "prompts" and primary[PPL].effect.n == 24
    # one unit per timing session: a session per pruned cell (3 levels x 2 temperatures), repeats averaged
    assert primary[SPEED].units == SESSION_UNITS and primary[SPEED].effect.n == 6
    q2 = {(c.metric, c.level): c for c in quickstart.family("Q2")}
    assert q2[(PPL, 30.0)].effect.test == SIGN_FLIP and q2[(PPL, 30.0)].effect.n == 24
    # one session per cell in this layout: 2 temperatures, 2 sessions
    assert q2[(SPEED, 30.0)].effect.test == SESSIONS_TEST and q2[(SPEED, 30.0)].effect.n == 2
    q4 = {c.metric: c for c in quickstart.family("Q4")}
    assert q4[SPEED].effect.test == "Welch t on the mean paired log ratio of each timing session"
    assert q4[SPEED].units == "timing sessions (two levels)" and q4[SPEED].effect.n == 2
    speed_rows = [c for c in quickstart.comparisons if c.metric == SPEED and "timed side by side" in c.units]
    assert speed_rows and all("session" in c.units or "pass" in c.units for c in speed_rows)  # never repeats
    q3 = quickstart.family("Q3")
    assert all(c.temperature == 1.0 and c.effect.n == 24 for c in q3)
    assert all(c.standardized is not None for c in quickstart.family("Q5"))
    corpus = quickstart.family(CORPUS_FAMILY)
    assert [c.level for c in corpus] == [0.0, 30.0, 50.0, 70.0]
    assert all(
        c.units == "evaluation windows" and c.effect.n == 31 and c.effect.test == WINDOW_TEST for c in corpus
    )


def test_question_3_needs_two_temperatures_and_compares_consecutive_ones() -> None:
    one = _stats(replace(GRID, temperatures=(0.7,)))
    assert one.family("Q3") == [] and len(one.family("Q2")) == 6
    three = build_design(build_records(replace(GRID, temperatures=(0.7, 1.0, 1.3))), SWEPT)
    series, arm = three.series()[0], three.agency_arms()[0]
    rows = question_3(three, series, arm, Units())
    assert [(c.temperature, c.level) for c in rows] == [
        (t, lv) for t in (1.0, 1.3) for lv in (30.0, 50.0, 70.0)
    ]
    assert "T=1.3 over at T=1" in rows[-1].contrast


def test_holm_runs_once_over_every_confirmatory_comparison_and_within_each_other_family(quickstart) -> None:
    families = Counter(c.family for c in quickstart.comparisons)
    assert families == {
        "primary": 2,
        "Q1": 2,
        "Q1-step": 2,
        "Q2": 6,
        "Q3": 3,
        "Q4": 2,
        "Q5": 6,
        DAMAGE_BY_TEMPERATURE: 2,
        CORPUS_FAMILY: 4,  # every level, temperatures pooled: one unit per evaluation window
        "aa": 2,
        "exploratory": 2 * 4 * 9,
    }
    confirmatory = [c for c in quickstart.comparisons if c.family in CONFIRMATORY]
    assert len(confirmatory) == 21 and {c.role for c in confirmatory} == {"primary"}
    assert [c.p_holm for c in confirmatory] == holm([c.effect.p for c in confirmatory])
    for family in (DAMAGE_BY_TEMPERATURE, CORPUS_FAMILY, "aa", "exploratory"):
        members = quickstart.family(family)
        assert [c.p_holm for c in members] == holm([c.effect.p for c in members])
        assert {c.role for c in members} == {"exploratory" if family == "exploratory" else "secondary"}


def test_more_exploratory_rows_never_change_a_primary_p(quickstart) -> None:
    primary = [c for c in quickstart.comparisons if c.family in CONFIRMATORY]
    before = [(c.p_holm, c.p_floor_holm) for c in primary]
    extra = [replace(c, family="exploratory") for c in quickstart.comparisons if c.family == "exploratory"]
    _adjust(primary + extra * 5, 0.05)
    assert [(c.p_holm, c.p_floor_holm) for c in primary] == before


def test_merging_agency_variants_leaves_the_primary_families_unchanged(quickstart) -> None:
    """Adding variant arms (ablation and sham control) adds exploratory and ablation rows only."""
    grid = replace(GRID, arms=(BASELINE, AGENCY, agency(sham=True), agency(state_gating=False)))
    merged = _stats(grid)
    for family in CONFIRMATORY:
        assert [(c.metric, c.level, c.effect.p, c.p_holm) for c in merged.family(family)] == [
            (c.metric, c.level, c.effect.p, c.p_holm) for c in quickstart.family(family)
        ]
    ablation = merged.family("ablation")
    assert [(c.arm.label, c.other.label, c.metric) for c in ablation] == [
        ("agency", "baseline", PPL),
        ("agency(sham=true)", "agency", PPL),
        ("agency(sham=true)", "agency", SPEED),
        ("agency(state_gating=false)", "agency", PPL),
        ("agency(state_gating=false)", "agency", SPEED),
    ]
    assert len(merged.family("exploratory")) == 3 * len(quickstart.family("exploratory"))
    assert len(merged.family("aa")) == 2  # the A/A check is of the main agency arm


def test_a_clear_effect_is_read_in_its_direction() -> None:
    stats = _stats(SESSIONS.with_effects(ppl=at_pruned_levels(3.0), speed=at_pruned_levels(0.8)))
    for c in stats.family("Q2"):
        if c.metric == PPL and c.level == 70.0:
            # at 70% nearly every sample of both arms is degenerate text: the worst outcome in both, a tie
            cells = [cs for cs in stats.cells if cs.cell.level == 70.0]
            assert all(cs.degenerate[0] >= 0.9 * cs.degenerate[1] for cs in cells)
            assert c.reading(0.05) == "no significant difference"
            continue
        assert c.significant(0.05) and c.better() is False and c.reading(0.05) == "agency worse"
        truth, tolerance = (3.0, 0.5) if c.metric == PPL else (0.8, 0.05)
        assert shown(c, c.effect.estimate) == pytest.approx(truth, rel=tolerance)
        assert shown(c, c.effect.ci_low) < shown(c, c.effect.estimate) < shown(c, c.effect.ci_high)
    ppl5 = stats.family("Q5")[0]
    assert ppl5.metric == PPL and ppl5.reading(0.05) == "agency worse" and ppl5.standardized[0] < 0


def test_slopes_are_shown_per_10_points_of_pruning() -> None:
    # the degenerate-text threshold out of reach: text degenerate in both arms would tie at the worst outcome
    stats = _stats(
        SESSIONS.with_effects(ppl=growing(1.5), speed=growing(0.9)), units=Units(degenerate_perplexity=1e12)
    )
    q1 = {c.metric: c for c in stats.family("Q1") if c.level is None}
    truth = math.exp(10 * math.log(0.9) / 70)  # x0.985 per 10 points
    assert shown(q1[SPEED], q1[SPEED].effect.ci_low) < truth < shown(q1[SPEED], q1[SPEED].effect.ci_high)
    assert q1[SPEED].reading(0.05) == "agency worse" and q1[SPEED].significant(0.05)
    assert shown(q1[PPL], q1[PPL].effect.estimate) > 1  # perplexity ratio grows with the level


@pytest.mark.parametrize("seed", range(4))
def test_a_constant_agency_effect_at_every_pruned_level_gives_one_consistent_answer(seed: int) -> None:
    """x2 on perplexity and x0.9 on tokens/s at 30, 50 and 70% alike: the effect is found at the pruned levels,
    and neither the slope nor the high-vs-low contrast claims that it grows (the 0% step may: that is where it
    starts). Seeds 0..3. The degenerate-text threshold is raised out of reach here: with it, text that is
    degenerate in both arms is a tie at the worst outcome, which makes the effect on the outcome shrink where
    both arms degenerate (a real change, not a constant effect; test_a_clear_effect_is_read_in_its_direction)."""
    grid = GRID.with_effects(ppl=at_pruned_levels(2.0), speed=at_pruned_levels(0.9))
    stats = _stats(grid, seed=seed, units=Units(degenerate_perplexity=1e12))
    primary = {c.metric: c for c in stats.family("primary")}
    assert primary[SPEED].reading(0.05) == "agency worse" and primary[PPL].reading(0.05) == "agency worse"
    slopes = [c for c in stats.family("Q1") if c.level is None]
    assert [c.reading(0.05) for c in slopes] == ["no significant difference"] * 2
    assert [c.reading(0.05) for c in stats.family("Q4")] == ["no significant difference"] * 2
    summary = render_summary(stats, 16, [])
    q4 = summary.split("## 4.")[1].split("## 5.")[0]
    assert "helps more at the highest" not in q4 and "helps less at the highest" not in q4
    assert "no significant difference" in q4


def test_question_3_asks_how_temperature_changes_the_damage_of_pruning_in_each_arm(quickstart) -> None:
    """In the quickstart, pruning costs more log perplexity at T=1 than at T=0.7 (e.g. +4.0 vs +2.3 nats at 30%)
    in both arms alike: the damage contrast finds it, the agency interaction does not."""
    damage = quickstart.family(DAMAGE_BY_TEMPERATURE)
    assert [(c.arm.label, c.other.label, c.temperature) for c in damage] == [
        ("baseline", "baseline", 1.0),
        ("agency", "agency", 1.0),
    ]
    for c in damage:
        assert c.role == "secondary" and c.effect.n == 24 and c.effect.estimate > 1.0
        assert c.reading(0.05) == "pruning does more damage at the higher temperature"
    assert all(not c.significant(0.05) for c in quickstart.family("Q3"))
