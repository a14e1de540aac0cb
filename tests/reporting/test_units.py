"""Units of analysis: diversity as the distance to the unpruned model per prompt, degenerate text, and speed per
timing session: repeats paired by round only within the session they were timed in, then averaged there."""

from __future__ import annotations

import math

import numpy as np
import pytest
from session_timings import sessions_timing
from synthetic import AGENCY, make_record, timing_of

from reporting.comparison import SESSION_UNITS, SESSIONS_TEST, speed_at
from reporting.design import Arm, Cell, build_design
from reporting.estimators import mean_t_effect, welch_effect
from reporting.units import (
    MAX_DISTANCE,
    Units,
    cell_session_logs,
    degenerate_share,
    differences,
    prompt_values,
    session_log_ratios,
    speed_aa_ratios,
    timing_log_ratios,
    timing_session_logs,
)

BASE, AG = Arm("baseline"), Arm("agency")


def _s(ppl: float, d2: float) -> dict[str, float]:
    return {"reference_perplexity": ppl, "distinct_2": d2}


def _design(*records):
    design = build_design(list(records))
    return design, design.series()[0]


def test_diversity_is_the_distance_to_the_unpruned_baseline_on_the_same_prompt() -> None:
    design, series = _design(
        make_record(0.0, samples={(0, 0): _s(5, 0.9), (1, 0): _s(5, 0.6)}),  # the reference
        make_record(
            30.0,
            arm=AGENCY,
            samples={(0, 0): _s(20, 0.8), (0, 1): _s(20, 1.0), (1, 0): _s(20, 0.6), (2, 0): _s(20, 0.5)},
        ),
    )
    distances = prompt_values(design, Cell(series, 0.7, 30.0, AG), "distinct_2", Units())
    # prompt 0: mean(|0.8 - 0.9|, |1.0 - 0.9|); prompt 1: on the reference; prompt 2: no reference, no unit
    assert distances == {0: pytest.approx(0.1), 1: pytest.approx(0.0)}
    # the unpruned baseline itself is at distance 0
    assert prompt_values(design, Cell(series, 0.7, 0.0, BASE), "distinct_2", Units()) == {0: 0.0, 1: 0.0}


def test_the_reference_is_the_baseline_at_the_lowest_level_of_the_same_temperature() -> None:
    design, series = _design(
        make_record(0.0, 0.7, samples={(0, 0): _s(5, 0.9)}),
        make_record(0.0, 1.0, samples={(0, 0): _s(9, 0.5)}),
        make_record(30.0, 1.0, arm=AGENCY, samples={(0, 0): _s(20, 0.6)}),
    )
    assert prompt_values(design, Cell(series, 1.0, 30.0, AG), "distinct_2", Units()) == {
        0: pytest.approx(0.1)
    }


def test_degenerate_text_gets_the_largest_distance_so_it_is_never_a_diversity_gain() -> None:
    design, series = _design(
        make_record(0.0, samples={(0, 0): _s(5, 0.9)}),
        # the baseline at 30% writes text that is 0.4 from the reference
        make_record(30.0, samples={(0, 0): _s(50, 0.5)}),
        # the agency arm's text is degenerate: its distinct-2 matches the reference, yet it is at distance 1
        make_record(30.0, arm=AGENCY, samples={(0, 0): _s(5000, 0.9)}),
    )
    cell = Cell(series, 0.7, 30.0, AG)
    assert prompt_values(design, cell, "distinct_2", Units()) == {0: MAX_DISTANCE}
    assert degenerate_share(design, cell, Units()) == (1, 1)
    diff = differences(design, series, 30.0, [0.7], "distinct_2", AG, BASE, Units())
    assert diff == {0: pytest.approx(1.0 - 0.4)}  # agency further from the unpruned model: worse
    # with a higher threshold the same sample is ordinary text, at distance 0
    assert prompt_values(design, cell, "distinct_2", Units(degenerate_perplexity=1e4)) == {
        0: pytest.approx(0.0)
    }
    assert degenerate_share(design, cell, Units(degenerate_perplexity=1e4)) == (0, 1)


def test_a_looping_sample_is_degenerate_and_counts_as_the_worst_outcome_on_every_quality_metric() -> None:
    """A loop scores a LOW reference perplexity (the unpruned model predicts its own repeats): perplexity alone
    would call it the best text of the comparison. Its repetition rate flags it, and it then takes the worst
    perplexity of the comparison and the largest diversity distance."""
    ordinary = {"repetition_rate": 0.02, "distinct_2": 0.95}
    looping = {"reference_perplexity": 1.5, "repetition_rate": 0.9, "distinct_2": 0.1}
    design, series = _design(
        make_record(0.0, samples={(0, 0): {"reference_perplexity": 5.0, **ordinary}, (1, 0): _s(5, 0.9)}),
        make_record(30.0, samples={(0, 0): {"reference_perplexity": 40.0, **ordinary}, (1, 0): _s(80, 0.8)}),
        make_record(30.0, arm=AGENCY, samples={(0, 0): looping, (1, 0): _s(60, 0.8)}),
    )
    cell = Cell(series, 0.7, 30.0, AG)
    assert degenerate_share(design, cell, Units()) == (1, 2)
    ppl = differences(design, series, 30.0, [0.7], "reference_perplexity", AG, BASE, Units())
    # prompt 0: the loop gets the worst perplexity of the two cells (80), so agency is worse than 40, not better
    assert ppl == {0: pytest.approx(math.log(80 / 40)), 1: pytest.approx(math.log(60 / 80))}
    assert prompt_values(design, cell, "distinct_2", Units())[0] == MAX_DISTANCE
    # below the declared threshold the same sample is read as it is: a low perplexity, a gain
    lenient = Units(degenerate_repetition=0.95)
    assert degenerate_share(design, cell, lenient) == (0, 2)
    assert differences(design, series, 30.0, [0.7], "reference_perplexity", AG, BASE, lenient)[0] == (
        pytest.approx(math.log(1.5 / 40))
    )


def test_samples_degenerate_in_both_arms_tie_at_the_worst_outcome() -> None:
    design, series = _design(
        make_record(30.0, samples={(0, 0): _s(3000, 0.9), (1, 0): _s(20, 0.9)}),
        make_record(30.0, arm=AGENCY, samples={(0, 0): _s(9000, 0.9), (1, 0): _s(2000, 0.9)}),
    )
    ppl = differences(design, series, 30.0, [0.7], "reference_perplexity", AG, BASE, Units())
    assert ppl == {0: 0.0, 1: pytest.approx(math.log(9000 / 20))}


def test_differences_are_per_prompt_averaged_over_temperatures_on_the_log_scale() -> None:
    design, series = _design(
        make_record(30.0, 0.7, samples={(0, 0): _s(10, 0.5), (1, 0): _s(10, 0.5)}),
        make_record(
            30.0, 0.7, arm=AGENCY, samples={(0, 0): _s(20, 0.5), (1, 0): _s(5, 0.5), (2, 0): _s(5, 0.5)}
        ),
        make_record(30.0, 1.0, samples={(0, 0): _s(10, 0.5)}),
        make_record(30.0, 1.0, arm=AGENCY, samples={(0, 0): _s(40, 0.5)}),
    )
    diff = differences(design, series, 30.0, [0.7, 1.0], "reference_perplexity", AG, BASE, Units())
    # prompt 0: mean(log 2, log 4); prompt 1 only at T=0.7; prompt 2 has no baseline: dropped
    assert diff == {0: pytest.approx((math.log(2) + math.log(4)) / 2), 1: pytest.approx(math.log(0.5))}


def test_timing_repeats_pair_only_within_the_session_they_were_timed_in() -> None:
    design, series = _design(
        make_record(30.0, timing=timing_of([10.0, 11.0, 12.0], session="s1")),
        make_record(30.0, arm=AGENCY, timing=timing_of([9.0, 9.9, 10.8, 7.0], session="s1")),
    )
    ratios = timing_log_ratios(design, series, 30.0, [0.7], "tokens_per_second", AG, BASE)
    assert ratios == pytest.approx([math.log(0.9)] * 3)  # repeat 3 has no partner
    sessions = session_log_ratios(design, series, [30.0], [0.7], "tokens_per_second", AG, BASE)
    assert sessions == pytest.approx([math.log(0.9)])  # one session: one unit, whatever its repeats
    effect, units = speed_at(design, series, 30.0, AG, BASE)
    assert units == SESSION_UNITS and effect.n == 1 and effect.p is None  # one session: no test

    design, series = _design(
        make_record(30.0, timing=timing_of([10.0, 11.0, 12.0], session="s1")),
        make_record(30.0, arm=AGENCY, timing=timing_of([9.0, 9.9, 10.8], session="s2")),
    )
    assert timing_log_ratios(design, series, 30.0, [0.7], "tokens_per_second", AG, BASE) == []
    assert session_log_ratios(design, series, [30.0], [0.7], "tokens_per_second", AG, BASE) == []


BASE_SESSIONS = {"s1": [10.0, 10.4], "s2": [11.0, 11.6], "s3": [12.0, 11.8], "s4": [10.5, 10.1]}
AGENCY_SESSIONS = {"s1": [9.1, 9.9], "s2": [10.6, 10.1], "s3": [11.0, 11.1], "s4": [9.3, 9.6]}


def test_paired_speed_is_a_t_test_over_sessions_each_the_mean_log_ratio_of_its_rounds() -> None:
    design, series = _design(
        make_record(30.0, timing=sessions_timing(BASE_SESSIONS)),
        make_record(30.0, arm=AGENCY, timing=sessions_timing(AGENCY_SESSIONS)),
    )
    per_session = [
        float(np.mean(np.log(np.array(AGENCY_SESSIONS[s]) / np.array(BASE_SESSIONS[s]))))
        for s in BASE_SESSIONS
    ]
    assert session_log_ratios(design, series, [30.0], [0.7], "tokens_per_second", AG, BASE) == pytest.approx(
        per_session
    )
    effect, units = speed_at(design, series, 30.0, AG, BASE)
    assert units == SESSION_UNITS and effect == mean_t_effect(per_session, SESSIONS_TEST) and effect.n == 4
    repeats = mean_t_effect(timing_log_ratios(design, series, 30.0, [0.7], "tokens_per_second", AG, BASE))
    assert repeats.n == 8 and repeats.ci_high - repeats.ci_low != effect.ci_high - effect.ci_low


def test_a_cell_is_described_by_its_sessions_means() -> None:
    design, series = _design(make_record(30.0, timing=sessions_timing(BASE_SESSIONS)))
    cell = Cell(series, 0.7, 30.0, BASE)
    expected = [float(np.mean(np.log(v))) for v in BASE_SESSIONS.values()]
    assert cell_session_logs(design, cell, "tokens_per_second") == pytest.approx(expected)


def test_a_speed_aa_is_read_per_session_against_the_record_s_own_timing() -> None:
    record = make_record(30.0, timing=sessions_timing(BASE_SESSIONS))
    assert speed_aa_ratios(record, "tokens_per_second") == []  # none recorded
    pseudo = {s: [v * 1.1 for v in rounds] for s, rounds in BASE_SESSIONS.items()}
    pseudo["s5"] = [10.0, 10.0]  # a session the arm lacks pairs with nothing
    record.speed_aa = sessions_timing(pseudo)
    assert speed_aa_ratios(record, "tokens_per_second") == pytest.approx([math.log(1.1)] * 4)


def test_arms_timed_apart_fall_back_to_welch_over_the_timed_runs() -> None:
    records = [
        make_record(30.0, t, timing=timing_of(v, session=f"b{t}", schedule="alone"))
        for t, v in ((0.7, [10.0, 10.4, 9.8]), (1.0, [11.0, 11.2, 10.9]))
    ]
    records += [
        make_record(30.0, t, arm=AGENCY, timing=timing_of(v, session=f"a{t}", schedule="alone"))
        for t, v in ((0.7, [9.0, 9.3, 9.1]), (1.0, [10.2, 9.9, 10.0]))
    ]
    design, series = _design(*records)
    assert timing_log_ratios(design, series, 30.0, [0.7, 1.0], "tokens_per_second", AG, BASE) == []
    runs = timing_session_logs(design, series, 30.0, [0.7, 1.0], "tokens_per_second", AG)
    assert runs == pytest.approx([np.mean(np.log([9.0, 9.3, 9.1])), np.mean(np.log([10.2, 9.9, 10.0]))])
    effect, units = speed_at(design, series, 30.0, AG, BASE)
    assert "unpaired" in units and effect.test.startswith("Welch t")
    # each timed run is one unit: its repeats share the run's drift, so they are not counted as independent
    expected = welch_effect(
        runs, timing_session_logs(design, series, 30.0, [0.7, 1.0], "tokens_per_second", BASE)
    )
    assert effect.n == 2 and effect.estimate == pytest.approx(expected.estimate) and effect.p == expected.p
    repeats_as_units = welch_effect(
        np.log([9.0, 9.3, 9.1, 10.2, 9.9, 10.0]), np.log([10.0, 10.4, 9.8, 11.0, 11.2, 10.9])
    )
    assert repeats_as_units.p < 0.05 < effect.p  # the drift between runs is not mistaken for an effect


def test_non_positive_timings_are_left_out_of_log_ratios() -> None:
    design, series = _design(
        make_record(30.0, timing=timing_of([10.0, 0.0], session="s")),
        make_record(30.0, arm=AGENCY, timing=timing_of([9.0, 9.0], session="s")),
    )
    assert timing_log_ratios(design, series, 30.0, [0.7], "tokens_per_second", AG, BASE) == pytest.approx(
        [math.log(0.9)]
    )


def test_a_failed_sample_is_the_worst_outcome_of_every_quality_comparison_never_a_missing_row() -> None:
    """Prompt 1's agency sample failed to generate: it has no metric, and reads as the worst value in perplexity
    and the largest distance in diversity; the prompt stays in both comparisons."""
    agency = make_record(30.0, arm=AGENCY, samples={(0, 0): _s(10, 0.9), (1, 0): _s(10, 0.9)})
    agency.samples[1].metrics.clear()
    agency.samples[1].failures["generation"] = "RuntimeError: logits not finite"
    design, series = _design(
        make_record(0.0, samples={(0, 0): _s(5, 0.9), (1, 0): _s(5, 0.9)}),
        make_record(30.0, samples={(0, 0): _s(20, 0.9), (1, 0): _s(40, 0.9)}),
        agency,
    )
    ppl = differences(design, series, 30.0, [0.7], "reference_perplexity", AG, BASE, Units())
    assert ppl == {
        0: pytest.approx(math.log(10) - math.log(20)),
        1: pytest.approx(0.0),
    }  # worst: log 40 vs 40
    distance = differences(design, series, 30.0, [0.7], "distinct_2", AG, BASE, Units())
    assert distance == {0: pytest.approx(0.0), 1: pytest.approx(MAX_DISTANCE)}
