"""Failed samples are outcomes: each is the worst of its comparison, the report counts them, and it compares the
arms' failure rates (a half-precision run that overflows at high pruning must not read as a gain)."""

from __future__ import annotations

import copy
import math
from dataclasses import replace

from synthetic import QUICKSTART, agency, build_records

from reporting.design import build_design
from reporting.statistics import compute_statistics
from reporting.summary import render_summary
from reporting.units import Units

UNCENSORED = Units(degenerate_perplexity=1e12)  # no sample is degenerate: only failures are the worst here
LEVELS = (0.0, 30.0, 70.0)


def _records(failed_at_70: int):
    """The quickstart with an agency arm 2x better at 70%, then ``failed_at_70`` of its 48 samples there failed."""
    grid = replace(
        QUICKSTART, levels=LEVELS, arms=(QUICKSTART.arms[0], agency(ppl=lambda lv: 0.5 if lv == 70 else 1))
    )
    records = build_records(grid, seed=11)
    left = failed_at_70
    for record in records:
        flat_agency = record.config["model"]["agency"]["enabled"]
        if not flat_agency or record.config["model"]["pruning"]["level"] != 70.0:
            continue
        record.samples = [copy.deepcopy(s) for s in record.samples]
        for sample in record.samples:
            if left and "reference_perplexity" in sample.metrics:
                del sample.metrics["reference_perplexity"]
                sample.failures["reference_perplexity"] = "non-finite value inf"
                left -= 1
    return records


def _q2_at_70(stats):
    return next(c for c in stats.family("Q2") if c.level == 70.0 and c.metric == "reference_perplexity")


def test_an_arm_whose_samples_fail_reads_worse_not_better_and_the_summary_counts_the_failures() -> None:
    clean = compute_statistics(build_design(_records(0)), UNCENSORED)
    assert math.exp(_q2_at_70(clean).effect.estimate) < 1  # measured, the agency arm is better at 70%

    records = _records(45)
    stats = compute_statistics(build_design(records), UNCENSORED)
    row = _q2_at_70(stats)
    assert row.effect.n == 24  # no prompt dropped: a failed sample is the worst outcome, not a missing one
    assert math.exp(row.effect.estimate) > 1 and row.significant(stats.alpha) and not row.better()

    rates = stats.family("failures")
    assert [c.arm.label for c in rates] == ["agency"] and rates[0].significant(stats.alpha)
    assert rates[0].effect.estimate > 0 and not rates[0].better()  # the agency arm fails more often

    summary = render_summary(stats, len(records), [])
    section = summary.split("## Failed samples (secondary)", 1)[1].split("\n## ", 1)[0]
    assert (
        "| 0.7 | 70% | agency | 24/24 |" in section and "| 1 | 70% | agency | 21/24 |" in section
    )  # 45 in all
    assert (
        "| failed samples | share of failed samples, arm minus baseline" in section
        and "agency worse" in section
    )


def test_without_failures_nothing_is_added_to_the_summary() -> None:
    stats = compute_statistics(build_design(_records(0)), UNCENSORED)
    assert stats.family("failures") == []
    assert "## Failed samples" not in render_summary(stats, 12, [])
    assert all(c.failed[0] == 0 and c.failed[1] == 24 for c in stats.cells)
