"""Statistics over synthetic records: known effects found, absent effects not, numbers equal numpy's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from reporting_synthetic import default_metrics, write_grid

from reporting.cells import Cell, Point
from reporting.records import load_records
from reporting.statistics import Statistics, compute_statistics
from reporting.summary import render_summary

T_975_DF29 = 2.045229642132703  # scipy.stats.t.ppf(0.975, 29), written out so numpy alone checks the interval


def _stats(run_dir: Path, **grid) -> tuple[Statistics, list[dict]]:
    write_grid(run_dir, **grid)
    loaded = load_records([run_dir])
    assert loaded.problems == []
    return compute_statistics(loaded.records), loaded.records


def test_known_effect_is_significant_after_holm(tmp_path: Path) -> None:
    stats, records = _stats(tmp_path / "run", metric_fn=default_metrics(effect=0.2))
    rows = [r for r in stats.paired if r.metric == "reference_perplexity"]
    assert len(rows) == 8  # 2 temperatures x 4 levels
    for row in rows:
        assert row.test.n == 30
        assert row.test.mean_difference < 0 and row.gain > 0
        assert row.p_wilcoxon_holm < 0.05 and row.p_ttest_holm < 0.05 and row.significant()
    summary = render_summary(stats, len(records), [])
    q5 = summary.split("## 5.")[1].split("##")[0]
    assert "reference perplexity (8 points)" in q5
    q2 = summary.split("## 2.")[1].split("## 3.")[0]
    assert "| reference perplexity | none" not in q2


def test_no_effect_gives_no_significant_difference(tmp_path: Path) -> None:
    stats, records = _stats(tmp_path / "run", metric_fn=default_metrics(effect=0.0), rng_seed=11)
    tested = [r for r in stats.paired if r.p_wilcoxon_holm is not None]
    assert len(tested) > 50
    assert all(r.p_wilcoxon_holm >= 0.05 for r in tested)
    assert all(r.p_holm >= 0.05 for r in stats.slopes if r.p_holm is not None)
    assert all(r.p_holm >= 0.05 for r in stats.temperature if r.p_holm is not None)
    summary = render_summary(stats, len(records), [])
    assert "no significant difference" in summary
    assert "**Answer: no significant difference in any slope**" in summary
    assert "**Answer: none**" in summary
    assert "agency degrades" not in summary and "significant gain at the highest level" not in summary
    assert "no quality metric benefits: no significant difference" in summary


def test_cell_statistics_match_numpy(tmp_path: Path) -> None:
    stats, records = _stats(tmp_path / "run", temperatures=(0.7,), levels=(0, 50), seeds=(0, 1))
    cell = Cell("gpt2", "entropy", 0.7, 50.0, True)
    members = [r for r in records if r["config"]["pruning_level"] == 50 and r["config"]["agency"]]
    assert len(members) == 2  # two seeds pool into one cell
    values = np.array([s["metrics"]["tokens_per_second"] for r in members for s in r["samples"]])
    got = stats.cell(cell).sample["tokens_per_second"]
    n = values.size
    assert got.n == n == 60 and got.n_failed == 0
    assert got.mean == pytest.approx(values.mean())
    assert got.std == pytest.approx(values.std(ddof=1))
    t59 = 2.0009953066713  # t(0.975, df=59)
    half = t59 * values.std(ddof=1) / np.sqrt(n)
    assert (got.ci_low, got.ci_high) == pytest.approx((values.mean() - half, values.mean() + half))
    corpus = stats.cell(cell).condition["corpus_perplexity"]
    expected = [r["condition_metrics"]["corpus_perplexity"] for r in members]
    assert corpus.n == 2 and corpus.mean == pytest.approx(np.mean(expected))


def test_paired_difference_matches_numpy(tmp_path: Path) -> None:
    stats, records = _stats(tmp_path / "run", temperatures=(1.0,), levels=(30,))
    by_arm = {r["config"]["agency"]: r for r in records}
    key = lambda s: (s["prompt_index"], s["iteration"])  # noqa: E731
    base = {key(s): s["metrics"]["reference_perplexity"] for s in by_arm[False]["samples"]}
    agen = {key(s): s["metrics"]["reference_perplexity"] for s in by_arm[True]["samples"]}
    diff = np.array([agen[k] - base[k] for k in sorted(base)])
    row = next(r for r in stats.paired if r.metric == "reference_perplexity")
    assert row.point == Point("gpt2", "entropy", 1.0, 30.0)
    half = T_975_DF29 * diff.std(ddof=1) / np.sqrt(30)
    assert row.test.mean_difference == pytest.approx(diff.mean())
    assert (row.test.ci_low, row.test.ci_high) == pytest.approx((diff.mean() - half, diff.mean() + half))


def test_single_record_condition_metric_has_no_interval(tmp_path: Path) -> None:
    stats, _ = _stats(tmp_path / "run", temperatures=(0.7,), levels=(0,))
    corpus = stats.cells[0].condition["corpus_perplexity"]
    assert corpus.n == 1 and corpus.std is None and corpus.ci_low is None and corpus.ci_high is None
    row = next(r for r in stats.paired if r.metric == "corpus_perplexity")
    assert row.test.n == 1 and row.test.p_wilcoxon is None and row.p_wilcoxon_holm is None
    assert row.test.note == "fewer than 2 pairs: no test"


def test_failed_metric_is_counted_not_filled(tmp_path: Path) -> None:
    def metrics(rng, config, prompt, iteration):
        values = default_metrics()(rng, config, prompt, iteration)
        if prompt == 0:
            values["reference_perplexity"] = float("nan")  # ConditionRecord stores it as a failure
        return values

    stats, _ = _stats(tmp_path / "run", temperatures=(0.7,), levels=(0,), arms=(False,), metric_fn=metrics)
    d = stats.cells[0].sample["reference_perplexity"]
    assert (d.n, d.n_failed) == (27, 3)


def test_linear_metric_slope_recovered_and_difference_found(tmp_path: Path) -> None:
    def metrics(rng, config, prompt, iteration):
        values = default_metrics()(rng, config, prompt, iteration)
        slope = 0.1 if config["agency"] else 0.3
        values["reference_perplexity"] = 20 + slope * config["pruning_level"] + rng.normal(0, 1.0)
        return values

    stats, records = _stats(tmp_path / "run", temperatures=(0.7,), metric_fn=metrics)
    row = next(r for r in stats.slopes if r.metric == "reference_perplexity")
    assert row.baseline.ci_low < 0.3 < row.baseline.ci_high
    assert row.agency.ci_low < 0.1 < row.agency.ci_high
    assert row.difference.ci_low < -0.2 < row.difference.ci_high
    assert row.significant()
    summary = render_summary(stats, len(records), [])
    assert "agency degrades less" in summary


def test_pairs_need_equal_configs_apart_from_the_arm(tmp_path: Path) -> None:
    write_grid(tmp_path / "a", temperatures=(0.7,), levels=(0,), arms=(False,), seeds=(0,))
    write_grid(tmp_path / "b", temperatures=(0.7,), levels=(0,), arms=(True,), seeds=(1,), rng_seed=5)
    stats = compute_statistics(load_records([tmp_path / "a", tmp_path / "b"]).records)
    assert stats.paired == []  # different seeds: not the same condition, so not paired
    assert len(stats.cells) == 2
