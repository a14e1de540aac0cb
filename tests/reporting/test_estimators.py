"""Estimators: effects with intervals and their coverage, the sign-flip test and its floor, Holm's adjustment."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from reporting.estimators import (
    BOOTSTRAP_RESAMPLES,
    EXACT_SIGN_FLIPS_UP_TO,
    SIGN_FLIP,
    SIGN_FLIP_DRAWS,
    WINDOW_TEST,
    PairedTest,
    bootstrap_interval,
    describe,
    holm,
    holm_confidences,
    holm_floor,
    lag1_autocorrelation,
    mean_t_effect,
    paired_effect,
    regression_effect,
    sign_flip_floor,
    slope,
    stream_seed,
    welch_effect,
    window_effect,
)

COVERAGE_RUNS = 2000  # simulated sets of 24 prompts per distribution
PROMPTS = 24  # the quickstart's n


@pytest.mark.parametrize("seed", range(5))
def test_paired_effect_estimates_the_mean_with_an_interval_and_a_test_of_that_mean(seed: int) -> None:
    d = np.random.default_rng(seed).normal(0.2, 0.8, 24)
    effect = paired_effect(d, f"comparison {seed}")
    assert effect.n == 24 and effect.estimate == pytest.approx(d.mean())
    assert effect.ci_low < effect.estimate < effect.ci_high
    # the interval of that mean: about mean +- t(23) sd / sqrt(n)
    half = stats.t.ppf(0.975, 23) * d.std(ddof=1) / math.sqrt(d.size)
    assert effect.ci_high - effect.ci_low == pytest.approx(2 * half, rel=0.25)
    # the test is of the same mean: the larger of its two tests' p, each close to the t-test's
    test = PairedTest(d, stream_seed(f"comparison {seed}"))
    assert effect.p == max(test.sign_flip_p(0.0), test.bootstrap_t_p(0.0))
    assert effect.p == pytest.approx(stats.ttest_1samp(d, 0.0).pvalue, abs=0.04)
    assert effect.p_floor == pytest.approx(1 / (SIGN_FLIP_DRAWS + 1)) and effect.test == SIGN_FLIP
    assert effect.note is None and effect.tested


def test_each_comparison_has_its_own_random_stream_and_the_same_name_repeats_it() -> None:
    d = np.random.default_rng(7).normal(0.1, 1.0, 24)
    first, again, other = paired_effect(d, "Q2|30"), paired_effect(d, "Q2|30"), paired_effect(d, "Q2|50")
    assert first == again
    assert (first.ci_low, first.p) != (other.ci_low, other.p)
    assert stream_seed("Q2|30") != stream_seed("Q2|50") and stream_seed("a") == stream_seed("a")


@pytest.mark.parametrize("n", [5, 9, 12])
def test_the_exact_sign_flip_p_counts_every_pattern(n: int) -> None:
    d = np.random.default_rng(n).normal(0.3, 1.0, n)
    sums = [
        abs(sum(s * v for s, v in zip(signs, d, strict=True)))
        for signs in itertools.product((1, -1), repeat=n)
    ]
    by_hand = sum(x >= abs(d.sum()) * (1 - 1e-12) for x in sums) / 2**n
    assert n <= EXACT_SIGN_FLIPS_UP_TO and PairedTest(d, 0).sign_flip_p(0.0) == pytest.approx(by_hand)


def test_the_monte_carlo_sign_flip_p_is_seeded_and_close_to_the_exact_one() -> None:
    d = np.random.default_rng(3).normal(0.4, 1.0, 16)
    exact = PairedTest(d, 0).sign_flip_p(0.0)
    longer = np.concatenate([d, [0.0]])  # 17 units, one of them zero: the same exact distribution
    assert PairedTest(longer, 5).sign_flip_p(0.0) == PairedTest(longer, 5).sign_flip_p(0.0)
    assert PairedTest(longer, 5).sign_flip_p(0.0) == pytest.approx(
        exact, abs=4 * math.sqrt(exact * (1 - exact) / SIGN_FLIP_DRAWS)
    )


def test_bootstrap_interval_is_seeded_and_uses_the_given_statistic() -> None:
    values = np.random.default_rng(3).normal(0, 1, 30)
    assert bootstrap_interval(values) == bootstrap_interval(values)
    low, high = bootstrap_interval(values, statistic=np.median)
    assert low < np.median(values) < high
    assert BOOTSTRAP_RESAMPLES >= 1000


@pytest.mark.slow  # 2,000 simulated bootstrap intervals per distribution
@pytest.mark.parametrize(
    "name, draw",
    [
        ("normal", lambda rng: rng.normal(0.0, 0.778, PROMPTS)),  # the quickstart's arm difference sd
        ("skewed", lambda rng: rng.exponential(0.778, PROMPTS) - 0.778),  # mean 0, right tail
    ],
)
def test_the_95_percent_interval_covers_the_true_mean_in_93_to_97_percent_of_runs(
    name: str, draw, capsys: pytest.CaptureFixture[str]
) -> None:
    """2000 simulated sets of 24 per-prompt differences with mean 0. The binomial sd of a 95% rate over 2000 runs
    is 0.5 points, so 93-97% is four sd either side. Symmetric differences (arms that do not differ) are rejected in
    about 5%; skewed ones of mean 0 at most 6% (the bootstrap-t half of the test holds the size the sign-flip half
    alone lost: 8.5% here)."""
    rng = np.random.default_rng(20261201)
    covered = rejected = 0
    for run in range(COVERAGE_RUNS):
        effect = paired_effect(draw(rng), f"coverage {name} {run}")
        covered += effect.ci_low <= 0.0 <= effect.ci_high
        rejected += effect.p < 0.05
        assert (effect.ci_low <= 0.0 <= effect.ci_high) == (effect.p >= 0.05)  # one answer
    with capsys.disabled():
        print(
            f"\ncoverage ({name}, n = {PROMPTS}, {COVERAGE_RUNS} runs): {covered / COVERAGE_RUNS:.3f}; "
            f"sign-flip rejections {rejected / COVERAGE_RUNS:.3f}"
        )
    assert 0.93 <= covered / COVERAGE_RUNS <= 0.97
    assert 0.03 <= rejected / COVERAGE_RUNS <= (0.06 if name == "skewed" else 0.07)


@pytest.mark.parametrize("n", range(31))
def test_sign_flip_floor_is_two_over_two_to_the_n_or_the_monte_carlo_resolution(n: int) -> None:
    exact = 1.0 if n == 0 else min(1.0, 2 / 2**n)
    expected = exact if n <= EXACT_SIGN_FLIPS_UP_TO else max(exact, 1 / (SIGN_FLIP_DRAWS + 1))
    assert sign_flip_floor(n) == expected


@pytest.mark.parametrize("n", [4, 5, 8])
def test_the_floor_is_what_the_exact_test_gives_when_every_prompt_agrees(n: int) -> None:
    d = np.arange(1, n + 1, dtype=float)
    effect = paired_effect(d, "agree")
    assert effect.p == pytest.approx(2 / 2**n) == pytest.approx(effect.p_floor)
    if n == 4:
        assert effect.p_floor == 0.125  # with 4 prompts nothing can be significant


def test_identical_differences_give_p_one_with_a_note() -> None:
    effect = paired_effect([0.0] * 12, "identical")
    assert effect.p == 1.0 and effect.estimate == 0.0
    assert "identical" in effect.note
    assert effect.p_floor == pytest.approx(2 / 2**12)  # the design's floor, not a lack of units


def test_some_identical_prompts_are_counted_in_a_note() -> None:
    d = [0.0, 0.0, 0.0, 0.5, -0.2, 0.7, 0.9, 0.3]
    effect = paired_effect(d, "some identical")
    test = PairedTest(np.asarray(d), 0)
    assert effect.p == max(
        test.sign_flip_p(0.0), PairedTest(np.asarray(d), stream_seed("some identical")).bootstrap_t_p(0.0)
    )
    assert test.sign_flip_p(0.0) == PairedTest(np.asarray(d), 1).sign_flip_p(0.0)  # exact: no stream involved
    assert effect.note == "3 of 8 prompts gave identical values"


def test_mostly_tied_prompts_give_a_finite_interval_around_the_mean() -> None:
    """Prompts whose arms both wrote degenerate text tie at 0; resamples of ties alone have no t and are left out."""
    d = np.array([0.0] * 22 + [1.3, -0.4])
    effect = paired_effect(d, "mostly tied")
    assert effect.ci_low <= effect.estimate <= effect.ci_high
    assert -3.0 < effect.ci_low and effect.ci_high < 3.0


def test_too_few_prompts_are_not_tested_and_never_get_a_number_substituted() -> None:
    none = paired_effect([], "none")
    assert (none.n, none.estimate, none.p, none.ci_low) == (0, None, None, None) and none.note
    one = paired_effect([0.4], "one")
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


def _awkward_sets(rng: np.random.Generator) -> list[np.ndarray]:
    """Data sets the report really meets: few prompts, ties at 0 (identical text, degenerate pairs), skew."""
    sets = [np.array([0.6, 0.6]), np.array([0.0] * 20 + [0.1, 0.2, 0.3, 0.4]), np.array([0.0] * 23 + [0.5])]
    for n in (2, 3, 4, 6, 12, 24, 40):
        for ties in (0.0, 0.5, 0.8, 0.95):
            for shift in (0.0, 0.4, 1.5):
                draw = (
                    rng.exponential(1.0, n) - 1.0 + shift if rng.random() < 0.5 else rng.normal(shift, 1.0, n)
                )
                sets.append(np.where(rng.random(n) < ties, 0.0, draw))
    return sets


def _excludes_zero(low: float | None, high: float | None) -> bool:
    return (low is not None and low > 0) or (high is not None and high < 0)


def test_the_interval_excludes_zero_exactly_when_the_test_rejects_ties_skew_and_few_prompts_included() -> (
    None
):
    """The interval is the test inverted: at 95% and at the stricter levels a Holm step asks for, in every set."""
    rng = np.random.default_rng(20261207)
    checked = 0
    for index, d in enumerate(_awkward_sets(rng)):
        effect = paired_effect(d, f"agreement {index}")
        if effect.p is None or not np.any(d):
            continue
        for confidence in (0.95, 0.99, 0.995):
            low, high = effect.interval_at(confidence)
            assert _excludes_zero(low, high) == (effect.p < 1 - confidence), (
                d,
                confidence,
                low,
                high,
                effect.p,
            )
            checked += 1
    assert checked > 150


def test_a_stricter_level_gives_a_wider_interval_and_too_few_prompts_give_none() -> None:
    d = np.random.default_rng(4).normal(0.5, 1.0, 24)
    effect = paired_effect(d, "levels")
    low, high = effect.interval_at(0.99)
    assert low < effect.ci_low < effect.estimate < effect.ci_high < high
    two = paired_effect([0.6, 0.6], "two")  # the test cannot reject anything with two prompts (p >= 0.5)
    assert (two.ci_low, two.ci_high, two.p) == (None, None, 0.5) and "no finite interval" in two.note


def test_twenty_tied_prompts_and_four_gains_read_as_one_answer() -> None:
    """The bootstrap-t interval alone gave [0.025, 0.24] here beside p = 0.126."""
    effect = paired_effect([0.0] * 20 + [0.1, 0.2, 0.3, 0.4], "ties")
    assert effect.p == pytest.approx(0.1259, abs=0.002)
    assert effect.ci_low <= 0.0 < effect.ci_high


@pytest.mark.slow  # 1,500 sets per size
@pytest.mark.parametrize("n", [6, 12, 24])
def test_skewed_differences_of_mean_zero_are_rejected_in_at_most_6_percent(
    n: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rare large losses against small gains (exponential, skewness 2): the sign-flip test alone rejected 6-9%.
    At 6 prompts the sign-flip half rejects only when all six agree in sign (6.6% of these sets), and the count
    is held to 6% as a binomial test would: not significantly above it."""
    rng = np.random.default_rng(n)
    runs = 3000
    rejected = sum(
        paired_effect(rng.exponential(1.0, n) - 1.0, f"skew {n} {r}").p < 0.05 for r in range(runs)
    )
    with capsys.disabled():
        print(f"\nskewed null, n = {n}: {rejected / runs:.3f} rejected")
    assert stats.binomtest(rejected, runs, 0.06, alternative="greater").pvalue > 0.05


@pytest.mark.slow  # 1,000 sets per tie share
@pytest.mark.parametrize("ties", [0.8, 0.95])
def test_mostly_tied_prompts_keep_coverage_and_agreement(
    ties: float, capsys: pytest.CaptureFixture[str]
) -> None:
    """24 prompts, a share of them tied at 0, the rest symmetric around 0: the interval covers 0 at least 93% (the
    bootstrap-t interval alone covered 44% at 95% ties) and agrees with the test in every set. With 1 to 5 untied
    prompts the sign-flip test can rarely reject, so coverage is above 95%: conservative, never collapsed."""
    rng = np.random.default_rng(int(ties * 100))
    runs, covered = 1000, 0
    for r in range(runs):
        d = np.where(rng.random(24) < ties, 0.0, rng.normal(0.0, 1.0, 24))
        effect = paired_effect(d, f"ties {ties} {r}")
        if effect.p is None:
            covered += 1
            continue
        inside = not _excludes_zero(effect.ci_low, effect.ci_high)
        assert inside == (effect.p >= 0.05)
        covered += inside
    with capsys.disabled():
        print(f"\n{ties:.0%} ties: coverage {covered / runs:.3f}")
    assert covered / runs >= 0.93


def _ar1(rng: np.random.Generator, n: int, rho: float) -> np.ndarray:
    x = np.empty(n)
    x[0] = rng.normal() / math.sqrt(1 - rho * rho)
    for i in range(1, n):
        x[i] = rho * x[i - 1] + rng.normal()
    return x


def test_window_effect_records_the_lag_1_autocorrelation_and_widens_with_it() -> None:
    rng = np.random.default_rng(5)
    smooth, rough = _ar1(rng, 31, 0.8) + 0.3, rng.normal(0.3, 1.0, 31)
    for d in (smooth, rough):
        effect = window_effect(d)
        assert effect.dependence == pytest.approx(lag1_autocorrelation(d))
        assert effect.test == WINDOW_TEST and "lag-1 autocorrelation" in effect.note
        low, high = effect.interval_at(0.99)
        assert low < effect.ci_low and effect.ci_high < high
    # the same values in a smooth order against a shuffled one: the smooth order is read as fewer windows
    ordered = np.sort(rough)
    assert (
        window_effect(ordered).ci_high - window_effect(ordered).ci_low
        > window_effect(rough).ci_high - window_effect(rough).ci_low
    )
    assert lag1_autocorrelation(ordered) > 0.8


@pytest.mark.slow  # 2,000 series per correlation
@pytest.mark.parametrize("rho", [0.0, 0.2, 0.4, 0.8])
def test_correlated_windows_give_at_most_5_percent_false_positives(
    rho: float, capsys: pytest.CaptureFixture[str]
) -> None:
    """31 windows (the default text's) whose differences follow an AR(1) with lag-1 correlation ``rho`` and mean
    0: independent windows gave 4 / 11 / 22 / 49% false positives. Coverage is the rest (the interval is the test
    inverted); it is 95-98%, conservative where the windows are independent (the correlation is bounded above)."""
    rng = np.random.default_rng(int(rho * 10) + 1)
    runs = 2000
    rejected = sum(window_effect(_ar1(rng, 31, rho)).p < 0.05 for _ in range(runs))
    with capsys.disabled():
        print(
            f"\nwindows, lag-1 {rho}: {rejected / runs:.3f} false positives, coverage {1 - rejected / runs:.3f}"
        )
    assert 0.015 <= rejected / runs <= 0.05


def test_holm_confidences_give_intervals_that_agree_with_holm() -> None:
    """For 2,000 random families: a test's interval at its Holm level excludes the null exactly when Holm rejects."""
    rng = np.random.default_rng(9)
    for _ in range(2000):
        m = int(rng.integers(1, 12))
        p = list(rng.uniform(0, 0.06, m) ** rng.uniform(0.5, 2.0))
        levels, adjusted = holm_confidences(p, 0.05), holm(p)
        for p_one, level, p_adjusted in zip(p, levels, adjusted, strict=True):
            # a test's interval at level L excludes the null exactly when its p < 1 - L
            assert (p_one < 1 - level) == (p_adjusted < 0.05)
    assert holm_confidences([None, 0.01], 0.05) == [None, 0.95]
