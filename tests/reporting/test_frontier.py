"""The frontier: the arm without agency chosen on the calibration text alone, the agency arm read against it,
compensation per ranking, the random ranking's band, and question 2 answered on the frontier."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from synthetic import BASELINE, QUICKSTART, agency, build_records

from reporting.analyses.frontier import (
    COMPENSATION_FAMILY,
    FRONTIER_FAMILY,
    choose,
    frontier_levels,
    frontier_verdict,
    ranking_arms,
)
from reporting.design import build_design
from reporting.statistics import compute_statistics
from reporting.summary import render_summary
from reporting.units import Units

LEVELS = (0.0, 10.0, 20.0)
COMPENSATE = "model.pruning.compensate"
# calibration-text perplexity per (method, compensate): fluctuation compensated is the best on calibration
CALIBRATION = {("magnitude", "none"): 80.0, ("magnitude", "mean"): 60.0, ("fluctuation", "none"): 70.0}
CALIBRATION[("fluctuation", "mean")] = 50.0


def _grid(method: str, compensate: str, arms=(BASELINE,), seeds=(0,)):
    return replace(
        QUICKSTART,
        levels=LEVELS,
        temperatures=(0.7,),
        arms=arms,
        method=method,
        seeds=seeds,
        layers=4,
        heads=6,
        prompts=4,
        config=((COMPENSATE, compensate),),
    )


def _set_windows(record, values) -> None:
    record.corpus_windows = replace(record.corpus_windows, mean_nll=[float(v) for v in values])
    tokens = record.corpus_windows.tokens
    record.condition_metrics["corpus_perplexity"] = math.exp(
        sum(v * t for v, t in zip(values, tokens, strict=True)) / sum(tokens)
    )


def _records(agency_shift: float = -0.2, seed: int = 0, damage: float = 0.5):
    """Two rankings x zeroed/compensated at 0/10/20%, the agency arm (entropy, compensated), random draws.
    Evaluation windows: unpruned 3.0 + noise; a ranking arm adds ``damage`` x level/10 (compensated half of it)."""
    rng = np.random.default_rng(seed)
    base = 3.0 + rng.normal(0, 0.3, 31)
    records = []
    for method in ("magnitude", "fluctuation"):
        for compensate in ("none", "mean"):
            for record in build_records(_grid(method, compensate)):
                level = record.config["model"]["pruning"]["level"]
                cost = damage * level / 10 * (0.5 if compensate == "mean" else 1.0)
                _set_windows(record, base + cost + rng.normal(0, 0.05, 31))
                record.condition_metrics["calibration_perplexity"] = CALIBRATION[(method, compensate)] + level
                records.append(record)
    for record in build_records(_grid("entropy", "mean", arms=(agency(),))):
        if record.config["model"]["agency"]["enabled"]:
            level = record.config["model"]["pruning"]["level"]
            frontier = base + damage * level / 10 * 0.5
            _set_windows(record, frontier + (agency_shift if level else 0) + rng.normal(0, 0.05, 31))
            records.append(record)
    for record in build_records(_grid("random", "none", seeds=tuple(range(5)))):
        _set_windows(record, base + record.config["model"]["pruning"]["level"] / 10 + rng.normal(0, 0.05, 31))
        records.append(record)
    return records


def _design(records):
    return build_design(records, swept=[COMPENSATE])


def test_the_frontier_arm_is_chosen_on_the_calibration_text_and_reads_no_evaluation_value() -> None:
    records = _records()
    chosen = [fl.chosen.label for fl in frontier_levels(_design(records), Units())]
    assert chosen == ["fluctuation, compensated"] * 2
    # perturb every evaluation value (windows, corpus perplexity, KL, induction): the same choice
    rng = np.random.default_rng(7)
    for record in records:
        _set_windows(record, np.asarray(record.corpus_windows.mean_nll) + rng.normal(0, 2.0, 31))
        record.condition_metrics["corpus_kl"] = float(rng.uniform(0, 5))
        record.condition_metrics["induction_accuracy"] = float(rng.uniform(0, 1))
    assert [fl.chosen.label for fl in frontier_levels(_design(records), Units())] == chosen
    # and a calibration value does move it
    for record in records:
        if record.config["model"]["pruning"]["method"] == "magnitude":
            record.condition_metrics["calibration_perplexity"] = 1.0
    assert {fl.chosen.method for fl in frontier_levels(_design(records), Units())} == {"magnitude"}


def test_a_ranking_arm_without_a_calibration_score_is_never_chosen() -> None:
    arms = ranking_arms(_design(_records()))[("embedded", 10.0)]
    unscored = [replace(a, calibration_perplexity=None) if a.method == "fluctuation" else a for a in arms]
    assert choose(unscored).label == "magnitude, compensated"
    assert choose([replace(a, calibration_perplexity=None) for a in arms]) is None


@pytest.mark.parametrize(("shift", "verdict"), [(-0.3, "beats"), (0.3, "loses to"), (0.0, "ties")])
def test_the_agency_arm_is_read_against_the_frontier_arm_by_window(shift: float, verdict: str) -> None:
    stats = compute_statistics(_design(_records(agency_shift=shift)))
    rows = stats.family(FRONTIER_FAMILY)
    assert [r.level for r in rows] == [10.0, 20.0]
    for row in rows:
        assert row.other.label == "frontier (fluctuation, compensated)" and row.units == "evaluation windows"
        assert frontier_verdict(row, stats.alpha).startswith(verdict)
        if shift:
            assert math.exp(row.effect.estimate) == pytest.approx(math.exp(shift), rel=0.05)


def test_compensation_is_compared_per_ranking_and_level() -> None:
    stats = compute_statistics(_design(_records()))
    rows = stats.family(COMPENSATION_FAMILY)
    assert sorted((r.series.label(), r.arm.label, r.other.label, r.level) for r in rows) == [
        ("embedded / fluctuation", "compensated", "zeroed", 10.0),
        ("embedded / fluctuation", "compensated", "zeroed", 20.0),
        ("embedded / magnitude", "compensated", "zeroed", 10.0),
        ("embedded / magnitude", "compensated", "zeroed", 20.0),
    ]
    assert all(r.effect.estimate < 0 and r.effect.p < 0.05 for r in rows)  # compensation halves the damage


def test_question_2_on_the_frontier_names_a_level_or_says_none() -> None:
    usable = render_summary(compute_statistics(_design(_records(damage=0.02))), 0, [])
    assert "**Question 2 on the frontier**" in usable and "embedded: **20%**" in usable
    broken = render_summary(compute_statistics(_design(_records(damage=0.5))), 0, [])
    assert "embedded: **none within ×1.1** at any pruned level measured" in broken


def test_the_summary_shows_the_frontier_table_and_the_placebo_band() -> None:
    text = render_summary(compute_statistics(_design(_records())), 0, [])
    section = text.split("## The frontier")[1].split("\n## ")[0]
    assert "fluctuation, compensated" in section and "zeroed" in section
    assert "### The agency arm against the frontier" in section
    assert "### Compensation per ranking" in section
    levels = frontier_levels(_design(_records()), Units())
    median, low, high, draws = levels[0].placebo["zeroed"]
    assert draws == 5 and low <= median <= high


def test_the_frontier_figure_draws_every_ranking_and_keeps_its_legend_off_the_points(
    tmp_path, monkeypatch
) -> None:
    import reporting.plots as plots
    from reporting.plot_data import PlotData

    captured = {}

    def keep(fig, path):
        fig.canvas.draw()
        captured["fig"] = fig
        return path

    monkeypatch.setattr(plots, "_save", keep)
    stats = compute_statistics(_design(_records()))
    plots.frontier_figure(PlotData(stats), tmp_path)
    fig = captured["fig"]
    (ax,) = fig.axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    for line in ("fluctuation, compensated", "fluctuation, zeroed", "magnitude, zeroed"):
        assert line in labels
    assert any(label.startswith("random ranking, zeroed") for label in labels)
    renderer = fig.canvas.get_renderer()
    legend, axes = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
    assert legend.x0 >= axes.x1  # beside the axes: it cannot cover a point


def test_the_headline_says_where_the_agency_arm_beats_ties_or_loses_to_the_frontier() -> None:
    text = render_summary(compute_statistics(_design(_records(agency_shift=0.3))), 0, [])
    headline = text.split("## Headline")[1].split("\n## ")[0]
    (line,) = [x for x in headline.splitlines() if x.startswith("- **Against the frontier:**")]
    assert "10% loses to" in line and "20% loses to" in line and "×1.3" in line


def _with_probes(records, kl_shift: float, induction_shift: float, seed: int = 3):
    """Per-unit KL (31 windows) and induction accuracy (24 sequences) on every record: ranking arms share one
    profile; the agency arm's is shifted by the given amounts."""
    from reporting.analyses.frontier import INDUCTION, KL

    rng = np.random.default_rng(seed)
    kl, induction = rng.uniform(0.05, 0.3, 31), rng.uniform(0.3, 0.9, 24)
    for record in records:
        is_agency = record.config["model"]["agency"]["enabled"]
        record.unit_values[KL] = [
            float(v) for v in kl + (kl_shift if is_agency else 0) + rng.normal(0, 0.01, 31)
        ]
        shifted = induction + (induction_shift if is_agency else 0) + rng.normal(0, 0.03, 24)
        record.unit_values[INDUCTION] = [float(v) for v in np.clip(shifted, 0, 1)]
    return records


def test_kl_by_window_and_induction_by_sequence_read_the_agency_arm_against_the_frontier() -> None:
    from reporting.analyses.frontier import PROBES_FAMILY

    stats = compute_statistics(_design(_with_probes(_records(), kl_shift=0.1, induction_shift=-0.2)))
    rows = stats.family(PROBES_FAMILY)
    assert sorted((r.metric, r.level, r.units) for r in rows) == [
        ("corpus_kl", 10.0, "evaluation windows"),
        ("corpus_kl", 20.0, "evaluation windows"),
        ("induction_accuracy", 10.0, "induction sequences"),
        ("induction_accuracy", 20.0, "induction sequences"),
    ]
    for row in rows:
        shift = 0.1 if row.metric == "corpus_kl" else -0.2
        assert row.effect.estimate == pytest.approx(shift, abs=0.03) and row.effect.p < 0.05
        assert row.reading(stats.alpha).endswith("worse")  # more KL and less induction: worse either way
    section = render_summary(stats, 0, []).split("## The frontier")[1].split("\n## ")[0]
    assert "### What small damage shows" in section
    same = compute_statistics(_design(_with_probes(_records(), kl_shift=0.0, induction_shift=0.0)))
    assert all(not r.significant(same.alpha) for r in same.family(PROBES_FAMILY))


def test_an_agency_arm_whose_evaluation_failed_loses_to_the_frontier_in_a_row_of_its_own() -> None:
    records = _records()
    for record in records:
        if record.config["model"]["agency"]["enabled"] and record.config["model"]["pruning"]["level"] == 10:
            record.corpus_windows = None
            record.condition_metrics.pop("corpus_perplexity", None)
    rows = compute_statistics(_design(records)).family(FRONTIER_FAMILY)
    (failed,) = [r for r in rows if r.level == 10.0]
    assert failed.effect.p is None and "agency arm's corpus_perplexity is missing" in failed.effect.note
    assert frontier_verdict(failed, 0.05) == "loses to"  # a failure is the worst outcome, never dropped


def test_one_ranking_arm_is_no_frontier_so_nothing_is_read_against_it() -> None:
    """A quickstart runs one ranking: calling it "the frontier" would let the agency arm "beat the frontier"."""
    records = [
        r
        for r in _records()
        if r.config["model"]["agency"]["enabled"]
        or (
            r.config["model"]["pruning"]["method"] == "magnitude"
            and r.config["model"]["pruning"]["compensate"] == "none"
        )
    ]
    design = _design(records)
    assert frontier_levels(design, Units()) == []
    stats = compute_statistics(design)
    assert stats.family(FRONTIER_FAMILY) == []
    assert "## The frontier" not in render_summary(stats, 0, [])
