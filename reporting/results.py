"""What a report computed: the description of every cell, every comparison, the choices and the attributions.

``statistics.py`` fills it; ``summary.md``, the plots and ``statistics.json`` read it. It holds no computation,
so every analysis can render from it without importing the code that computes it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from reporting.comparison import Comparison, shown
from reporting.design import Arm, Cell, Series
from reporting.optimal import LevelChoice, Margin, ParetoFront
from reporting.units import Units

ADJUSTMENT = (
    "Holm over the 'confirmatory' set (families primary, Q1..Q5 and attribution-layer together: one error rate "
    "per report), and "
    "within each other family; a comparison's 'adjusted_with' names its set"
)


@dataclass
class Attribution:
    """One agency arm's pooled answer split into its two parts, and the sentence that says where it comes from."""

    series: Series
    arm: Arm
    control: Arm
    whole: Comparison | None
    choice: Comparison | None
    layer: Comparison | None
    sentence: str


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
    failed: tuple[int, int] = (0, 0)  # samples whose generation or reference perplexity failed, of all


@dataclass
class Statistics:
    alpha: float
    units: Units
    cells: list[CellStats]
    comparisons: list[Comparison]
    min_acted_share: float  # the manipulation check's threshold (analyses/manipulation.py declares it)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    margin: Margin = field(default_factory=Margin)
    optimal: list[LevelChoice] = field(default_factory=list)
    fronts: list[ParetoFront] = field(default_factory=list)
    attributions: list[Attribution] = field(default_factory=list)
    positive_controls: list[str] = field(default_factory=list)  # agency arms that answer no question (forced)
    families: dict[str, str] = field(default_factory=dict)  # every family of the report: what it tests
    speed_warning: str | None = None  # set when a speed A/A is outside noise: every speed answer carries it
    descriptions: dict[str, list[Any]] = field(
        default_factory=dict
    )  # per analysis, what it describes untested

    def family(self, name: str) -> list[Comparison]:
        return [c for c in self.comparisons if c.family == name]

    def cell(self, cell: Cell) -> CellStats | None:
        return next((c for c in self.cells if c.cell == cell), None)

    def to_dict(self) -> dict[str, Any]:
        """The report as statistics.json holds it: every cell, comparison, choice and rule, with readings."""
        return {
            "alpha": self.alpha,
            "families": self.families,
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
                    "shown_holm_ci": [shown(c, end) for end in c.holm_ci] if c.holm_ci is not None else None,
                    "reading": c.reading(self.alpha),
                }
                for c in self.comparisons
            ],
            "optimal_level": {
                "rule": f"per arm, the highest level reached from 0% through levels whose quality stays within "
                f"x{self.margin.ratio:g} of the unpruned model (one-sided 95% upper bound of the mean log ratio "
                "over prompts of reference perplexity, t, and over evaluation windows of corpus perplexity, t "
                "with the variance inflated for the windows' lag-1 autocorrelation, <= log(margin)); bootstrap: "
                "prompts, and blocks of adjacent windows, resampled, the choice made again",
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
            **(
                {"descriptions": {k: [as_dict(v) for v in vs] for k, vs in self.descriptions.items() if vs}}
                if any(self.descriptions.values())
                else {}
            ),
        }


ARM_FIELDS = frozenset(f.name for f in dataclasses.fields(Arm))


def _arm_as_label(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``dataclasses.asdict``'s dict factory: an arm is written as its label (what it is, the design says)."""
    fields = dict(pairs)
    fields.pop("refit", None)  # an effect's interval at other levels: a function, not a number
    return {"label": fields["label"]} if fields.keys() == ARM_FIELDS else fields


def as_dict(value: Any) -> dict[str, Any]:
    """A dataclass of the statistics as the JSON file holds it."""
    return dataclasses.asdict(value, dict_factory=_arm_as_label)
