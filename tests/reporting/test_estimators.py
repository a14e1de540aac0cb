"""Estimators: effects with intervals, tests against scipy, the Wilcoxon floor and Holm's adjustment."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from reporting.estimators import (
    BOOTSTRAP_RESAMPLES,
    bootstrap_interval,
    describe,
    holm,
    holm_floor,
    mean_t_effect,
    paired_effect,
    regression_effect,
    slope,
    welch_effect,
    wilcoxon_floor,
)


@pytest.mark.parametrize("seed", range(5))
def test_paired_effect_estimates_the_mean_with_a_bootstrap_interval_around_it(seed: int) -> None:
    d = np.random.default_rng(seed).normal(0.2, 0.8, 24)
    effect = paired_effect(d)
    assert effect.n == 24 and effect.estimate == pytest.approx(d.mean())
    assert effect.ci_low < effect.estimate < effect.ci_high
    # a percentile bootstrap of the mean: about mean +- 1.96 sd / sqrt(n)
    half = 1.96 * d.std(ddof=1) / math.sqrt(d.size)
    assert effect.ci_high - effect.ci_low == pytest.approx(2 * half, rel=0.2)
    assert effect.p == pytest.approx(stats.wilcoxon(d).pvalue)
    assert effect.p_floor == pytest.approx(2 / 2**24) and effect.test == "Wilcoxon signed-rank"
    assert effect.note is None and effect.tested


def test_bootstrap_interval_is_seeded_and_uses_the_given_statistic() -> None:
    values = np.random.default_rng(3).normal(0, 1, 30)
    assert bootstrap_interval(values) == bootstrap_interval(values)
    low, high = bootstrap_interval(values, statistic=np.median)
    assert low < np.median(values) < high
    assert BOOTSTRAP_RESAMPLES >= 1000


@pytest.mark.parametrize("n", range(0, 31))
def test_wilcoxon_floor_is_two_over_two_to_the_n(n: int) -> None:
    assert wilcoxon_floor(n) == (1.0 if n == 0 else min(1.0, 2 / 2**n))


@pytest.mark.parametrize("n", [4, 5, 8])
def test_the_floor_is_what_an_exact_wilcoxon_gives_when_every_prompt_agrees(n: int) -> None:
    d = np.arange(1, n + 1, dtype=float)
    effect = paired_effect(d)
    assert effect.p == pytest.approx(2 / 2**n) == pytest.approx(effect.p_floor)
    if n == 4:
        assert effect.p_floor == 0.125  # with 4 prompts nothing can be significant


def test_identical_differences_give_p_one_with_a_note() -> None:
    effect = paired_effect([0.0] * 12)
    assert effect.p == 1.0 and effect.estimate == 0.0
    assert "identical" in effect.note
    assert effect.p_floor == pytest.approx(2 / 2**12)  # the design's floor, not a lack of units


def test_some_identical_prompts_are_not_ranked_and_the_note_says_how_many() -> None:
    d = [0.0, 0.0, 0.0, 0.5, -0.2, 0.7, 0.9, 0.3]
    effect = paired_effect(d)
    assert effect.p == pytest.approx(stats.wilcoxon(d, zero_method="wilcox").pvalue)
    assert effect.note == "3 of 8 prompts gave identical values (not ranked)"


def test_too_few_prompts_are_not_tested_and_never_get_a_number_substituted() -> None:
    none = paired_effect([])
    assert (none.n, none.estimate, none.p, none.ci_low) == (0, None, None, None) and none.note
    one = paired_effect([0.4])
    assert one.estimate == 0.4 and one.p is None and one.ci_low is None and not one.tested and one.note


def test_holm_matches_a_hand_computation() -> None:
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> running max 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == [1.0, 1.0]  # capped at 1
    assert holm([0.02]) == [0.02]
    assert holm([]) == []


def test_holm_leaves_untested_comparisons_out_of_the_family() -> None:
    assert holm([None, 0.01, None, 0.04]) == [None, pytest.approx(0.02), None, pytest.approx(0.04)]
    assert holm([None, None]) == [None, None]


def test_holm_floor_is_the_floor_times_the_family_size() -> None:
    floors = [0.125, 0.0, None, 2 / 2**24]
    assert holm_floor(floors, 0) == pytest.approx(0.375)  # three tests in the family
    assert holm_floor(floors, 1) == 0.0  # a t-test has no floor
    assert holm_floor(floors, 2) is None
    assert holm_floor([0.5, 0.5, 0.5], 0) == 1.0


def test_mean_t_effect_matches_scipy() -> None:
    x = np.random.default_rng(1).normal(-0.1, 0.02, 10)
    effect = mean_t_effect(x)
    reference = stats.ttest_1samp(x, 0.0)
    low, high = reference.confidence_interval(0.95)
    assert effect.estimate == pytest.approx(x.mean()) and effect.p == pytest.approx(reference.pvalue)
    assert (effect.ci_low, effect.ci_high) == (pytest.approx(low), pytest.approx(high))
    assert effect.p_floor == 0.0 and effect.n == 10


def test_mean_t_effect_without_spread_or_units_is_not_tested() -> None:
    flat = mean_t_effect([0.1, 0.1, 0.1])  # its sd rounds to 1.7e-17, not 0: still no spread, no test
    assert flat.p is None and "spread" in flat.note and flat.estimate == pytest.approx(0.1)
    assert mean_t_effect([0.3]).p is None and mean_t_effect([]).estimate is None


def test_welch_effect_matches_scipy() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(2.7, 0.02, 5), rng.normal(2.6, 0.05, 8)
    effect = welch_effect(a, b)
    reference = stats.ttest_ind(a, b, equal_var=False)
    low, high = reference.confidence_interval(0.95)
    assert effect.estimate == pytest.approx(a.mean() - b.mean()) and effect.p == pytest.approx(
        reference.pvalue
    )
    assert (effect.ci_low, effect.ci_high) == (pytest.approx(low), pytest.approx(high))
    assert effect.n == 5 and effect.test == "Welch t on log values"


def test_welch_effect_needs_two_values_per_group_and_some_spread() -> None:
    assert welch_effect([1.0], [1.0, 2.0]).p is None
    flat = welch_effect([1.0, 1.0], [2.0, 2.0])
    assert flat.p is None and flat.estimate == -1.0
    # equal values whose variance rounds to 1e-34 rather than 0 are no spread either (not p = 1e-33)
    rounded = welch_effect([0.1, 0.1, 0.1], [0.3, 0.3])
    assert rounded.p is None and "spread" in rounded.note


def test_regression_effect_matches_scipy() -> None:
    rng = np.random.default_rng(4)
    x = np.repeat([0.0, 30.0, 50.0, 70.0], 10)
    y = -0.0015 * x + rng.normal(0, 0.02, x.size)
    effect = regression_effect(x, y)
    fit = stats.linregress(x, y)
    half = stats.t.ppf(0.975, x.size - 2) * fit.stderr
    assert effect.estimate == pytest.approx(fit.slope) and effect.p == pytest.approx(fit.pvalue)
    assert (effect.ci_low, effect.ci_high) == (
        pytest.approx(fit.slope - half),
        pytest.approx(fit.slope + half),
    )


def test_regression_effect_needs_three_values_over_two_levels_and_a_residual() -> None:
    assert regression_effect([1.0, 2.0], [1.0, 2.0]).p is None
    assert regression_effect([5.0, 5.0, 5.0], [1.0, 2.0, 3.0]).p is None
    exact = regression_effect([0.0, 1.0, 2.0], [1.0, 3.0, 5.0])
    assert exact.p is None and exact.estimate == pytest.approx(2.0) and "exact" in exact.note


def test_slope_and_describe() -> None:
    x, y = [0.0, 30.0, 50.0, 70.0], [0.1, 0.4, 0.2, 0.9]
    assert slope(x, y) == pytest.approx(np.polyfit(x, y, 1)[0])
    assert slope([1.0, 1.0], [2.0, 3.0]) is None
    values = [1.0, 2.0, 4.0]
    mean, low, high = describe(values)
    half = stats.t.ppf(0.975, 2) * np.std(values, ddof=1) / math.sqrt(3)
    assert (mean, low, high) == (
        pytest.approx(7 / 3),
        pytest.approx(7 / 3 - half),
        pytest.approx(7 / 3 + half),
    )
    assert describe([3.0]) == (3.0, None, None) and describe([]) == (None, None, None)
