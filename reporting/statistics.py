"""All numbers of a report, computed from the records with ``scipy.stats``.

Descriptions per cell (natural units: geometric means for log-scale metrics,
intervals over the metric's units of analysis), then every comparison of
``questions.py`` with Holm's correction: one adjustment over every confirmatory
comparison of the report together (the primary endpoint and every question's
agency comparisons: one error rate per report, contract 14), and one within each
secondary family (corpus perplexity per evaluation window, the A/A checks at 0%,
the ablation, recovery, temperature and the damage of pruning) and the
exploratory family. Question 2's answer adds, per arm, the highest level within
the quality margin (with its bootstrap) and the speed/quality Pareto front
(``optimal.py``): choices and descriptions, not tests.

``attribution.py`` adds the split of each agency answer into the pruning choice and
the run-time layer (the layer's pooled part is confirmatory, the rest secondary), the
strategies, the inert A/A at every pruned level and the manipulation check; after Holm
it reads a gain the protected control explains as not agency's.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from record.catalogue import CATALOGUE, spec
from reporting.attribution import (
    MIN_ACTED_SHARE,
    Attribution,
    attribution,
    attributions,
    check_manipulation,
    credit,
    inert_aa,
    strategies,
)
from reporting.design import Arm, Cell, Design, shared_agency_settings
from reporting.estimators import describe, holm, holm_floor
from reporting.optimal import LevelChoice, Margin, ParetoFront, optimal_levels, pareto_fronts
from reporting.questions import (
    ATTRIBUTION_FAMILY,
    CORPUS_FAMILY,
    DAMAGE_BY_TEMPERATURE,
    INERT_AA_FAMILY,
    LAYER_FAMILY,
    POSITIVE_CONTROL_FAMILY,
    PRIMARY,
    PRIMARY_ENDPOINT,
    PROTECTION_FAMILY,
    QUESTIONS,
    SPEED_AA_FAMILY,
    STRATEGY_FAMILY,
    Comparison,
    aa_checks,
    ablation,
    corpus_comparisons,
    damage_by_temperature,
    exploratory,
    primary_endpoint,
    recovery,
    shown,
    speed_aa,
    speed_warning,
)
from reporting.units import Units, cell_session_logs, degenerate_share

ALPHA = 0.05
ADJUSTMENT = (
    "Holm over the 'confirmatory' set (families primary, Q1..Q5 and attribution-layer together: one error rate "
    "per report), and "
    "within each other family; a comparison's 'adjusted_with' names its set"
)
FAMILIES = {
    "primary": f"primary endpoint: {PRIMARY_ENDPOINT}",
    **{q: f"primary comparisons of question {q[1]}: {text}" for q, text in QUESTIONS.items()},
    DAMAGE_BY_TEMPERATURE: "secondary, question 3: the damage pruning does to each arm (pruned vs 0%) at one "
    "temperature over the next",
    CORPUS_FAMILY: "secondary quality endpoint: agency vs baseline corpus perplexity at every level, paired by "
    "evaluation window (the same windows of the same text in every arm), mean log ratio",
    "aa": "agency vs baseline with nothing pruned (A/A: should show no difference)",
    SPEED_AA_FAMILY: "speed A/A: one cell's baseline timed against itself as a second arm in the same timing "
    "sessions and rounds (should show no difference; outside noise when the 95% interval over sessions excludes 1)",
    POSITIVE_CONTROL_FAMILY: "positive control: an agency arm whose head states are forced (head_overrides) "
    "against the baseline at every level it was run, nothing pruned first (should show a large difference; none "
    "means the state path or the report is broken); it answers no question",
    "ablation": "each agency component switched off, and the sham control, against the whole agency arm",
    "recovery": "each recovered model against the same condition before recovery, at every pruned level",
    "exploratory": "every agency arm vs the baseline at every level and temperature, every tested metric",
    LAYER_FAMILY: "primary, attribution: the run-time layer's part of the primary answer, agency vs the baseline "
    "that protects the same heads without the layer, pruned levels pooled (a claim about agency: confirmatory)",
    ATTRIBUTION_FAMILY: "secondary, attribution: the pruning choice's part (each protected baseline vs the "
    "baseline) pooled and per pruned level, and the run-time layer's part per pruned level",
    PROTECTION_FAMILY: "secondary: every other protected baseline (random protection, the dose-response over the "
    "protected fraction) vs the baseline, pooled and per pruned level",
    STRATEGY_FAMILY: "secondary: pruning methods compared baseline to baseline, and each agency arm against the "
    "gradient-ranked baseline, per pruned level and pooled, paired over prompts",
    INERT_AA_FAMILY: "secondary: the inert agency arm (every part off) vs the baseline at every pruned level "
    "(A/A: should show no difference)",
}


@dataclass
class Description:
    """One metric in one cell, in natural units: mean (geometric for log-scale metrics) and 95% interval."""

    n: int
    n_failed: int
    mean: float | None
    ci_low: float | None
    ci_high: float | None
    unit: str  # what n counts: prompts, timing sessions, records


@dataclass
class AgencySummary:
    n_records: int
    state_counts_mean: dict[str, float]
    overloaded_entries: float
    misaligned: int
    withholding_consent: float
    violations: dict[str, int]
    # The manipulation check (contract 13), means over the records; None: the records do not say.
    acted_share: dict[str, float] | None = None
    gate_mass_removed: float | None = None


@dataclass
class CellStats:
    cell: Cell
    n_records: int
    seeds: list[Any]
    condition_ids: list[str]
    metrics: dict[str, Description]
    agency: AgencySummary | None
    degenerate: tuple[int, int]


@dataclass
class Statistics:
    alpha: float
    units: Units
    cells: list[CellStats]
    comparisons: list[Comparison]
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    margin: Margin = field(default_factory=Margin)
    optimal: list[LevelChoice] = field(default_factory=list)
    fronts: list[ParetoFront] = field(default_factory=list)
    attributions: list[Attribution] = field(default_factory=list)
    min_acted_share: float = MIN_ACTED_SHARE
    positive_controls: list[str] = field(default_factory=list)  # agency arms that answer no question (forced)

    def family(self, name: str) -> list[Comparison]:
        return [c for c in self.comparisons if c.family == name]

    def cell(self, cell: Cell) -> CellStats | None:
        return next((c for c in self.cells if c.cell == cell), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "families": FAMILIES,
            "adjustment": ADJUSTMENT,
            "degenerate_perplexity": self.units.degenerate_perplexity,
            "degenerate_repetition": self.units.degenerate_repetition,
            "reading": "estimates are on the analysis scale (log ratios for log-scale metrics); 'shown' converts "
            "them (x exp; slopes per 10 points of pruning); p_holm is adjusted over 'adjusted_with'",
            "cells": [as_dict(c) for c in self.cells],
            "comparisons": [
                {
                    **as_dict(c),
                    "role": c.role,
                    "adjusted_with": c.adjusted_with,
                    "shown": [
                        shown(c, c.effect.estimate),
                        shown(c, c.effect.ci_low),
                        shown(c, c.effect.ci_high),
                    ],
                    "reading": c.reading(self.alpha),
                }
                for c in self.comparisons
            ],
            "optimal_level": {
                "rule": f"per arm, the highest level reached from 0% through levels whose quality stays within "
                f"x{self.margin.ratio:g} of the unpruned model (mean log ratio over prompts of reference "
                "perplexity and over evaluation windows of corpus perplexity <= log(margin)); bootstrap: "
                "prompts and windows resampled, the choice made again",
                "margin": self.margin.ratio,
                "choices": [as_dict(c) for c in self.optimal],
            },
            "pareto_front": {
                "rule": "per arm, levels not dominated in (tokens/s higher, reference perplexity ratio to the "
                "unpruned model lower)",
                "fronts": [{**as_dict(f), "front": f.front} for f in self.fronts],
            },
            "attribution": {
                "rule": "per prompt on the log scale, agency/baseline = (protected baseline/baseline: the pruning "
                "choice) x (agency/protected baseline: the run-time layer), pruned levels pooled; a gain is credited "
                "to the agency layer only when the run-time part is significant",
                "answers": [
                    {
                        "series": a.series.label(),
                        "arm": a.arm.label,
                        "control": a.control.label,
                        "where": a.sentence,
                    }
                    for a in self.attributions
                ],
            },
            "manipulation_check": {
                "min_acted_share": self.min_acted_share,
                "rule": "an ablation or sham row whose states spent less than this share of the kept heads' "
                "row-forwards outside active reads 'uninformative: the states did not act'",
            },
            "positive_controls": {
                "rule": "agency arms whose head_overrides force a state other than active answer no question "
                "(no primary endpoint, no question, no attribution, no strategy contrast); at 0% they are the "
                "positive control, which must differ from the baseline",
                "arms": self.positive_controls,
            },
            "problems": self.problems,
            "notes": self.notes,
        }


ARM_FIELDS = frozenset(f.name for f in dataclasses.fields(Arm))


def _arm_as_label(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``dataclasses.asdict``'s dict factory: an arm is written as its label (what it is, the design says)."""
    fields = dict(pairs)
    return {"label": fields["label"]} if fields.keys() == ARM_FIELDS else fields


def as_dict(value: Any) -> dict[str, Any]:
    """A dataclass of the statistics as the JSON file holds it."""
    return dataclasses.asdict(value, dict_factory=_arm_as_label)


def describe_metric(design: Design, cell: Cell, metric: str) -> Description | None:
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
            )
        )
    return result


def _adjust(comparisons: list[Comparison]) -> None:
    """Holm over each adjustment set (all confirmatory comparisons together; each other family on its own), and
    the smallest adjusted p each test could reach there."""
    by_family: dict[str, list[Comparison]] = defaultdict(list)
    for c in comparisons:
        by_family[c.adjusted_with].append(c)
    for members in by_family.values():
        adjusted = holm([c.effect.p for c in members])
        floors = [c.effect.p_floor if c.effect.p is not None else None for c in members]
        for index, (c, p) in enumerate(zip(members, adjusted, strict=True)):
            c.p_holm = p
            c.p_floor_holm = holm_floor(floors, index)


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
    for series in design.series():
        for arm in design.primary_arms(series):
            comparisons += primary_endpoint(design, series, arm, units)
            for question in PRIMARY.values():
                comparisons += question(design, series, arm, units)
    comparisons += damage_by_temperature(design, units) + corpus_comparisons(design)
    comparisons += (
        aa_checks(design, units) + speed_aa(design) + ablation(design, units) + recovery(design, units)
    )
    comparisons += exploratory(design, units)
    comparisons += attribution(design, units) + strategies(design, units) + inert_aa(design, units)
    check_manipulation(design, comparisons, min_acted_share)
    _adjust(comparisons)
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
    )
