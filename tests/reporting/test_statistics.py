"""Cell descriptions in natural units, the families of comparisons, and statistics.json's content."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats as scipy_stats
from synthetic import AGENCY, QUICKSTART, Grid, build_records, make_record, timing_of

from reporting.design import Arm, Cell, build_design
from reporting.report import json_safe
from reporting.statistics import ALPHA, FAMILIES, compute_statistics, describe_metric

GRID = replace(QUICKSTART, layers=4, heads=6)
SWEPT = {"model.pruning.level", "model.agency.enabled", "model.generation.temperature"}


@pytest.fixture(scope="module")
def design():
    return build_design(build_records(GRID), SWEPT)


@pytest.fixture(scope="module")
def statistics(design):
    return compute_statistics(design)


def test_perplexity_is_described_by_its_geometric_mean_over_prompts(design) -> None:
    cell = Cell(design.series()[0], 1.0, 50.0, Arm("agency"))
    logs = np.log([s.metrics["reference_perplexity"] for r in design.cells[cell] for s in r.samples])
    d = describe_metric(design, cell, "reference_perplexity")
    half = scipy_stats.t.ppf(0.975, 23) * logs.std(ddof=1) / math.sqrt(24)
    assert (d.n, d.unit, d.n_failed) == (24, "prompts", 0)
    assert d.mean == pytest.approx(math.exp(logs.mean()))
    assert (d.ci_low, d.ci_high) == (
        pytest.approx(math.exp(logs.mean() - half)),
        pytest.approx(math.exp(logs.mean() + half)),
    )


def test_speed_is_described_over_timing_sessions_and_corpus_perplexity_per_record(design) -> None:
    cell = Cell(design.series()[0], 0.7, 30.0, Arm("baseline"))
    speed = describe_metric(design, cell, "tokens_per_second")
    values = [t.value for t in design.timings(cell, "tokens_per_second")]
    assert (speed.n, speed.unit) == (1, "timing sessions")  # one session of 5 repeats: one unit, no interval
    assert speed.mean == pytest.approx(math.exp(np.mean(np.log(values)))) and speed.ci_low is None
    corpus = describe_metric(design, cell, "corpus_perplexity")
    assert (corpus.n, corpus.unit, corpus.ci_low) == (1, "records", None)
    assert corpus.mean == pytest.approx(103.0)
    distinct = describe_metric(design, cell, "distinct_2")
    assert distinct.unit == "prompts" and 0 < distinct.mean < 1  # linear metrics: arithmetic means
    assert describe_metric(design, cell, "peak_cuda_mb") is None  # not measured: no row, no number


def test_failed_measurements_are_counted_not_replaced() -> None:
    record = make_record(samples={(0, 0): {"reference_perplexity": 5.0}, (1, 0): {"distinct_1": 0.5}})
    record.samples[1].failures["reference_perplexity"] = "non-finite value inf"
    design = build_design([record])
    d = describe_metric(design, next(iter(design.cells)), "reference_perplexity")
    assert (d.n, d.n_failed, d.mean, d.ci_low) == (1, 1, pytest.approx(5.0), None)


def test_cells_carry_their_records_seeds_degenerate_share_and_agency_summary(statistics, design) -> None:
    assert len(statistics.cells) == 16 and [c.cell for c in statistics.cells] == list(design.cells)
    top = statistics.cell(Cell(design.series()[0], 1.0, 70.0, Arm("agency")))
    assert top.n_records == 1 and top.seeds == [0] and len(top.condition_ids) == 1
    flagged, total = top.degenerate
    assert total == 24 and flagged > 12  # the quickstart's 70% text at T=1 is mostly degenerate
    assert top.agency is not None and top.agency.n_records == 1
    assert statistics.cell(Cell(design.series()[0], 1.0, 70.0, Arm("baseline"))).agency is None


def test_every_family_is_described_and_the_json_is_strict(statistics) -> None:
    assert set(FAMILIES) == {
        "primary",
        "Q1",
        "Q1-step",
        "Q2",
        "Q3",
        "Q4",
        "Q5",
        "Q3-damage",
        "corpus",
        "aa",
        "speed-aa",
        "positive-control",
        "ablation",
        "recovery",
        "exploratory",
        "attribution-layer",
        "attribution",
        "protection",
        "strategies",
        "aa-pruned",
        "failures",
        "dose",
        "frontier",
        "frontier-probes",
        "compensation",
    }
    payload = statistics.to_dict()
    text = json.dumps(json_safe(payload), allow_nan=False)  # no NaN or infinity anywhere
    assert payload["alpha"] == ALPHA == 0.05 and payload["degenerate_perplexity"] == 1000.0
    assert payload["degenerate_repetition"] == 0.5 and "one error rate per report" in payload["adjustment"]
    comparisons = json.loads(text)["comparisons"]
    first = comparisons[0]
    assert (
        first["family"] == "primary"
        and first["role"] == "primary"
        and first["adjusted_with"] == "confirmatory"
    )
    assert set(first) >= {"effect", "p_holm", "p_floor_holm", "shown", "reading"}
    slope = next(c for c in comparisons if c["family"] == "Q1")
    assert slope["shown"][0] == pytest.approx(math.exp(10 * slope["effect"]["estimate"]))  # per 10 points
    roles = {(c["family"], c["role"], c["adjusted_with"]) for c in comparisons}
    assert ("Q3-damage", "secondary", "Q3-damage") in roles and ("aa", "secondary", "aa") in roles
    assert ("exploratory", "exploratory", "exploratory") in roles
    assert statistics.notes == []


def test_a_note_says_when_arms_were_timed_alone() -> None:
    stats = compute_statistics(build_design(build_records(replace(GRID, schedule="alone")), SWEPT))
    assert len(stats.notes) == 1 and "timed alone" in stats.notes[0] and "side by side" in stats.notes[0]
    (speed,) = [c for c in stats.family("Q4") if c.metric == "tokens_per_second"]
    assert speed.effect.p is None and speed.reading(stats.alpha) == (
        "not tested (the arms were timed apart: no sessions timed side by side at both levels)"
    )


def test_records_without_timing_or_samples_give_untested_comparisons_not_numbers() -> None:
    small = Grid(levels=(0.0, 30.0), temperatures=(0.7,), prompts=1, repeats=1, layers=4, heads=6)
    stats = compute_statistics(build_design(build_records(small), {"model.pruning.level"}))
    for c in stats.family("Q2"):
        assert c.effect.p is None and c.p_holm is None and c.reading(0.05).startswith("not tested")
    record = make_record(30.0, arm=AGENCY, timing=timing_of([10.0, 11.0]))
    alone = compute_statistics(build_design([record])).family("Q2")  # an agency arm without its baseline
    assert len(alone) == 2 and all(c.effect.p is None and c.effect.note for c in alone)
