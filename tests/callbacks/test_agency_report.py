"""The agency report describes generation: taken before any evaluation pass, without warm-up or timing steps."""

from __future__ import annotations

from callbacks.agency_report import AgencyReporter
from callbacks.quality import QualityMonitor
from callbacks.speed import SpeedMonitor
from lightning_modules.heads.agency import AgencyConfig


def test_baseline_has_no_agency_part(run_condition) -> None:
    assert run_condition([AgencyReporter()]).record.agency is None


def test_steps_count_the_measured_generation_only(run_condition) -> None:
    agency = AgencyConfig(enabled=True, overload_mode="absolute", overload_threshold=0.5)
    record = run_condition(
        [SpeedMonitor(repeats=3, batch_size=2, num_tokens=4), AgencyReporter()], agency=agency, num_tokens=6
    ).record
    assert record.agency.steps == 3 * 6  # 3 batches x 6 forwards; the timing's 4 decodes do not count
    assert sum(record.agency.state_counts_end.values()) == 2 * 4  # heads per row (2 layers x 4 heads)


def test_report_is_the_same_whether_corpus_perplexity_was_cached_or_not(run_condition) -> None:
    agency = AgencyConfig(enabled=True, overload_mode="absolute", overload_threshold=0.5)
    callbacks = lambda: [AgencyReporter(), QualityMonitor()]  # noqa: E731
    fresh = run_condition(callbacks(), agency=agency, level=25).record
    # the store now holds this state's corpus perplexity: the second run does not evaluate at all
    cached = run_condition(callbacks(), agency=agency, level=25).record
    assert fresh.condition_metrics["corpus_perplexity"] == cached.condition_metrics["corpus_perplexity"]
    assert fresh.agency == cached.agency
    assert fresh.agency.transitions["overloaded"] > 0  # the absolute threshold does fire on the tiny model
