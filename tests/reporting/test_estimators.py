"""Estimators against hand computations: Holm, paired tests, intervals, slopes."""

from __future__ import annotations

import numpy as np
import pytest

from reporting.estimators import describe, fit_slope, holm, kruskal_across, paired_test, slope_difference


def test_holm_matches_hand_computed_example() -> None:
    # m = 4, sorted p: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06.
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_and_skips_untested() -> None:
    adjusted = holm([0.5, None, 0.2, 0.9])
    # family of 3: 0.2*3 = 0.6, 0.5*2 = 1.0, 0.9*1 -> max(1.0, 0.9) = 1.0
    assert adjusted[1] is None
    assert adjusted[0] == pytest.approx(1.0) and adjusted[2] == pytest.approx(0.6) and adjusted[3] == 1.0
    assert holm([]) == []
    assert holm([None]) == [None]


def test_holm_single_test_is_unchanged() -> None:
    assert holm([0.03]) == pytest.approx([0.03])


def test_describe_one_value_has_no_interval() -> None:
    d = describe([4.2], n_failed=2)
    assert (d.n, d.n_failed, d.mean, d.std, d.ci_low, d.ci_high) == (1, 2, 4.2, None, None, None)
    assert describe([]).mean is None


def test_describe_matches_numpy_t_interval() -> None:
    values = np.array([1.0, 2.0, 4.0, 7.0])
    d = describe(values)
    half = 3.182446305284263 * values.std(ddof=1) / 2  # t(0.975, df=3) * s / sqrt(4)
    assert d.mean == pytest.approx(3.5)
    assert d.std == pytest.approx(values.std(ddof=1))
    assert (d.ci_low, d.ci_high) == pytest.approx((3.5 - half, 3.5 + half))


def test_paired_all_zero_differences_give_p_one_with_a_note() -> None:
    result = paired_test([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert result.p_wilcoxon == 1.0 and result.p_ttest == 1.0
    assert result.mean_difference == 0.0
    assert "zero" in result.note


def test_paired_single_pair_is_not_tested() -> None:
    result = paired_test([1.0], [2.0])
    assert result.p_wilcoxon is None and result.ci_low is None and result.mean_difference == 1.0


def test_paired_clear_shift_is_detected() -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(10, 1, 30)
    result = paired_test(base, base - 2 + rng.normal(0, 0.1, 30))
    assert result.mean_difference == pytest.approx(-2, abs=0.1)
    assert result.p_wilcoxon < 1e-6 and result.p_ttest < 1e-6
    assert result.ci_low < -2 + 0.1 and result.ci_high > -2 - 0.1


def test_slope_recovered_within_its_interval() -> None:
    rng = np.random.default_rng(7)
    levels = np.repeat([0.0, 30.0, 50.0, 70.0], 30)
    fit = fit_slope(levels, 3.0 + 0.5 * levels + rng.normal(0, 2.0, levels.size))
    assert fit.ci_low < 0.5 < fit.ci_high
    assert fit.slope == pytest.approx(0.5, abs=0.05)
    assert fit.df == levels.size - 2


def test_slope_needs_two_levels() -> None:
    fit = fit_slope([10.0, 10.0, 10.0], [1.0, 2.0, 3.0])
    assert fit.slope is None and fit.note


def test_slope_difference_combines_standard_errors() -> None:
    rng = np.random.default_rng(3)
    levels = np.repeat([0.0, 30.0, 50.0, 70.0], 30)
    base = fit_slope(levels, 20 + 0.3 * levels + rng.normal(0, 1, levels.size))
    agen = fit_slope(levels, 20 + 0.1 * levels + rng.normal(0, 1, levels.size))
    diff = slope_difference(base, agen)
    assert diff.difference == pytest.approx(agen.slope - base.slope)
    assert diff.stderr == pytest.approx(np.hypot(base.stderr, agen.stderr))
    assert diff.ci_low < -0.2 < diff.ci_high and diff.p < 1e-6


def test_kruskal_identical_values_p_one() -> None:
    assert kruskal_across([[1.0, 1.0], [1.0, 1.0]])[0] == 1.0
    assert kruskal_across([[1.0, 2.0]]) == (None, "fewer than 2 groups")
