"""Corpus perplexity as a paired endpoint: agency vs baseline per evaluation window, never from one number."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from synthetic import QUICKSTART, at_pruned_levels, build_records, write_run

from reporting.analyses.corpus import CORPUS_FAMILY, NO_WINDOWS
from reporting.comparison import shown
from reporting.design import Arm, Cell, build_design
from reporting.estimators import WINDOW_TEST, lag1_autocorrelation, window_effect
from reporting.report import ReportOptions, write_report
from reporting.statistics import compute_statistics
from reporting.units import window_differences, window_values

GRID = replace(QUICKSTART, layers=4, heads=6)
SWEPT = {"model.pruning.level", "model.agency.enabled", "model.generation.temperature"}
BASE, AGENCY = Arm("baseline"), Arm("agency")


@pytest.fixture(scope="module")
def gain():
    """Agency scores the text 20% better at every pruned level (corpus perplexity x0.8)."""
    return build_design(build_records(GRID.with_effects(ppl=at_pruned_levels(0.8))), SWEPT)


def test_windows_pair_by_index_and_pooled_temperatures_add_no_units(gain) -> None:
    series = gain.series()[0]
    per_t = [window_values(gain, Cell(series, t, 30.0, AGENCY)) for t in (0.7, 1.0)]
    assert len(per_t[0]) == 31 and per_t[0] == per_t[1]  # teacher-forced: the temperature changes nothing
    pooled = window_differences(gain, series, [0.7, 1.0], AGENCY, 30.0, BASE, 30.0)
    baseline = window_values(gain, Cell(series, 0.7, 30.0, BASE))
    assert sorted(pooled) == list(range(31))  # 31 windows, not 62
    assert [pooled[w] for w in range(31)] == pytest.approx([per_t[0][w] - baseline[w] for w in range(31)])


def test_corpus_perplexity_is_a_test_over_correlated_windows_that_finds_a_true_gain(gain) -> None:
    stats = compute_statistics(gain)
    rows = {c.level: c for c in stats.family(CORPUS_FAMILY)}
    assert sorted(rows) == [0.0, 30.0, 50.0, 70.0]
    series = gain.series()[0]
    for level in (30.0, 50.0, 70.0):
        c = rows[level]
        assert (c.role, c.units, c.effect.test, c.effect.n) == (
            "secondary",
            "evaluation windows",
            WINDOW_TEST,
            31,
        )
        by_hand = list(window_differences(gain, series, [0.7, 1.0], AGENCY, level, BASE, level).values())
        assert c.effect == window_effect(by_hand)  # in text order: the autocorrelation is of neighbours
        assert c.effect.dependence == pytest.approx(lag1_autocorrelation(by_hand))
        assert shown(c, c.effect.estimate) == pytest.approx(0.8, rel=0.03)
        assert c.reading(stats.alpha) == "agency better"
    # nothing pruned: the arms score the same windows identically
    assert rows[0.0].effect.estimate == 0 and "identical" in rows[0.0].effect.note
    assert rows[0.0].reading(stats.alpha) == "no significant difference"
    # one error rate per report is not touched: the corpus rows are adjusted within their own family
    assert [c.adjusted_with for c in rows.values()] == [CORPUS_FAMILY] * 4


def test_the_paired_window_test_appears_in_the_report(tmp_path) -> None:
    write_run(tmp_path / "run", GRID.with_effects(ppl=at_pruned_levels(0.8)))
    result = write_report([tmp_path / "run"], tmp_path / "out", ReportOptions(plots=False))
    text = result.summary_path.read_text(encoding="utf-8")
    section = text.split("## Corpus perplexity, paired by evaluation window (secondary)")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if "| corpus perplexity |" in line]
    assert len(rows) == 4 and all("n = 31 evaluation windows" in row for row in rows)
    assert "| agency/baseline at 30%, per evaluation window | ×0.8" in rows[1] and "agency better" in rows[1]
    payload = json.loads(result.statistics_path.read_text(encoding="utf-8"))
    corpus = [c for c in payload["comparisons"] if c["family"] == CORPUS_FAMILY]
    assert len(corpus) == 4 and {c["role"] for c in corpus} == {"secondary"}
    assert "paired by evaluation window" in payload["families"][CORPUS_FAMILY]


def test_records_without_windows_say_corpus_perplexity_is_not_tested() -> None:
    old = build_design(build_records(replace(GRID, corpus_windows=None)), SWEPT)
    stats = compute_statistics(old)
    rows = stats.family(CORPUS_FAMILY)
    assert len(rows) == 4 and all(c.effect.p is None and c.effect.estimate is None for c in rows)
    assert {c.reading(stats.alpha) for c in rows} == {f"not tested ({NO_WINDOWS})"}
    # the recorded value stays as it is, described per record
    cell = stats.cell(Cell(old.series()[0], 0.7, 30.0, BASE))
    assert cell.metrics["corpus_perplexity"].mean == pytest.approx(103.0)
    # the level choice reads reference perplexity alone and says why
    for choice in stats.optimal:
        assert choice.endpoints == ["reference perplexity"] and "no per-window values" in choice.note
    assert all(q.corpus_ratio is None for choice in stats.optimal for q in choice.levels)
