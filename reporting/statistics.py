"""All numbers of a report, computed from the records with ``scipy.stats``.

Descriptions per cell (natural units: geometric means for log-scale metrics, intervals over the metric's units
of analysis), then every analysis of ``analyses/registry.py`` in its order, then the manipulation check, then
Holm's correction over each adjustment set (every primary family together: one error rate per report,
contract 14; each other family alone), then the attribution's reading of the corrected answers (a gain the
protected control explains is not agency's). Question 2's answer adds, per arm, the highest level within the
quality margin (with its bootstrap) and the speed/quality Pareto front (``optimal.py``): choices and
descriptions, not tests. What comes out is ``results.Statistics``.
"""

from __future__ import annotations

import math
from collections import defaultdict

from record.catalogue import CATALOGUE, spec
from reporting.analyses.aa import speed_warning
from reporting.analyses.attribution import attributions, credit
from reporting.analyses.manipulation import MIN_ACTED_SHARE, check_manipulation
from reporting.analyses.registry import FAMILIES as DECLARED
from reporting.analyses.registry import REGISTRY
from reporting.comparison import QUALITY, Comparison
from reporting.design import Cell, Design, shared_agency_settings
from reporting.estimators import describe, holm, holm_confidences, holm_floor
from reporting.optimal import Margin, optimal_levels, pareto_fronts
from reporting.results import AgencySummary, CellStats, Description, Statistics
from reporting.units import Units, cell_session_logs, degenerate_share, failure_share

ALPHA = 0.05
FAMILIES = {str(family): family.description for family in DECLARED}  # declared by each analysis


def describe_metric(design: Design, cell: Cell, metric: str) -> Description | None:
    """One metric in one cell, over its own units (prompts, timing sessions or records), in natural units."""
    m = spec(metric)
    if m.measured_per == "sample":
        values, unit = list(design.prompt_values(cell, metric).values()), "prompts"
    elif m.measured_per == "timing":  # a session's repeats share its drift: its mean log value is one unit
        values, unit = cell_session_logs(design, cell, metric), "timing sessions"
    else:
        values = [
            math.log(v) if m.scale == "log" and v > 0 else v for v in design.condition_values(cell, metric)
        ]
        unit = "records"
    failed = design.failures(cell, metric)
    if not values and not failed:
        return None
    mean, low, high = describe(values)
    if m.scale == "log":
        mean, low, high = (None if v is None else math.exp(v) for v in (mean, low, high))
    return Description(len(values), failed, mean, low, high, unit)


def _agency_summary(design: Design, cell: Cell) -> AgencySummary | None:
    reports = [r.agency for r in design.cells.get(cell, []) if r.agency is not None]
    if not reports:
        return None
    counts: dict[str, float] = defaultdict(float)
    violations: dict[str, int] = defaultdict(int)
    for report in reports:
        for state, count in report.state_counts_mean.items():
            counts[state] += count / len(reports)
        for kind, count in report.violations.items():
            violations[kind] += count
    acted: dict[str, float] | None = None
    if all(r.acted_share for r in reports):
        acted = defaultdict(float)
        for report in reports:
            for state, share in report.acted_share.items():
                acted[state] += share / len(reports)
    return AgencySummary(
        len(reports),
        dict(counts),
        sum(r.transitions.get("overloaded", 0) for r in reports) / len(reports),
        max(len(r.misaligned) for r in reports),
        sum(r.withholding_consent for r in reports) / len(reports),
        dict(violations),
        None if acted is None else dict(acted),
        None if acted is None else sum(r.gate_mass_removed for r in reports) / len(reports),
    )


def describe_cells(design: Design, units: Units) -> list[CellStats]:
    """Every cell's description: metrics, agency summary and share of degenerate samples."""
    result = []
    for cell, members in design.cells.items():
        metrics = {m.name: d for m in CATALOGUE if (d := describe_metric(design, cell, m.name)) is not None}
        result.append(
            CellStats(
                cell,
                len(members),
                design.seeds(cell),
                [r.condition_id for r in members],
                metrics,
                _agency_summary(design, cell),
                degenerate_share(design, cell, units),
                failure_share(design, cell),
            )
        )
    return result


def _adjust(comparisons: list[Comparison], alpha: float) -> None:
    """Holm over each adjustment set (all confirmatory comparisons together; each other family on its own), the
    smallest adjusted p each test could reach there, and each test's interval at its Holm step's level."""
    by_family: dict[str, list[Comparison]] = defaultdict(list)
    for c in comparisons:
        by_family[c.adjusted_with].append(c)
    for members in by_family.values():
        adjusted = holm([c.effect.p for c in members])
        floors = [c.effect.p_floor if c.effect.p is not None else None for c in members]
        confidences = holm_confidences([c.effect.p for c in members], alpha)
        for index, (c, p, confidence) in enumerate(zip(members, adjusted, confidences, strict=True)):
            c.p_holm = p
            c.p_floor_holm = holm_floor(floors, index)
            if confidence is not None:
                c.holm_confidence, c.holm_ci = confidence, c.effect.interval_at(confidence)


def _mark_censored(design: Design, comparisons: list[Comparison], units: Units) -> None:
    """Each sample-based quality row: the share of its arms' samples, at its level (or over the pruned levels)
    and temperature (or all), that are degenerate or failed. Each cell's samples are scanned once, however many
    rows read it."""
    counts: dict[Cell, tuple[int, int]] = {}

    def bad_and_total(cell: Cell) -> tuple[int, int]:
        if cell not in counts:
            failed, samples = failure_share(design, cell)
            counts[cell] = (failed + degenerate_share(design, cell, units)[0], samples)
        return counts[cell]

    for c in comparisons:
        if c.metric != QUALITY or "prompt" not in c.units:
            continue
        levels = [c.level] if c.level is not None else [lv for lv in design.levels(c.series) if lv > 0]
        temperatures = [c.temperature] if c.temperature is not None else design.temperatures(c.series)
        bad = total = 0
        for cell in (
            Cell(c.series, t, lv, a) for t in temperatures for lv in levels for a in (c.arm, c.other)
        ):
            cell_bad, cell_total = bad_and_total(cell)
            bad += cell_bad
            total += cell_total
        c.censored = bad / total if total else None


def compute_statistics(
    design: Design,
    units: Units | None = None,
    alpha: float = ALPHA,
    margin: Margin | None = None,
    min_acted_share: float = MIN_ACTED_SHARE,
) -> Statistics:
    """Describe every cell; compute every family's comparisons; Holm over each adjustment set; choose each arm's
    level within the quality ``margin`` and its speed/quality front."""
    units, margin = units or Units(), margin or Margin()
    comparisons: list[Comparison] = []
    for series in design.series():  # the endpoint and the questions, per agency arm that answers them
        for arm in design.primary_arms(series):
            for analysis in (a for a in REGISTRY if a.per_arm is not None):
                comparisons += analysis.per_arm(design, series, arm, units)  # type: ignore[misc]
    for analysis in (a for a in REGISTRY if a.compare is not None):
        comparisons += analysis.compare(design, units)  # type: ignore[misc]
    check_manipulation(design, comparisons, min_acted_share)
    _mark_censored(design, comparisons, units)
    _adjust(comparisons, alpha)
    found = attributions(comparisons, design, alpha)
    credit(comparisons, found, alpha)
    notes = []
    shared = shared_agency_settings(design.records)
    if shared:
        notes.append(
            f"every agency arm departs from the default agency settings in {', '.join(shared)}; "
            "the arms are named without it"
        )
    forced = design.positive_control_arms()
    if forced:
        notes.append(
            f"{', '.join(forced)} force head states (head_overrides): positive controls, which answer no question "
            "(a state forced on chosen heads measures the state path, not the agency layer); their effect at 0% "
            "is in the A/A section"
        )
    warning = speed_warning(comparisons)
    if warning:
        notes.append(warning)
    if design.timed_alone():
        notes.append(
            "some conditions were timed alone (each by its own process, e.g. W&B agents): their speed "
            "differences are unpaired in time, so machine drift between the runs counts as noise or as "
            "an effect; time the arms side by side (a local sweep) to compare speed"
        )
    descriptions = {a.name: a.describe(design, units) for a in REGISTRY if a.describe is not None}
    return Statistics(
        alpha,
        units,
        describe_cells(design, units),
        comparisons,
        notes=notes,
        margin=margin,
        optimal=optimal_levels(design, units, margin),
        fronts=pareto_fronts(design, units),
        attributions=found,
        min_acted_share=min_acted_share,
        positive_controls=design.positive_control_arms(),
        families=FAMILIES,
        speed_warning=warning,
        descriptions=descriptions,
    )
