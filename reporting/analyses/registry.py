"""The report's analyses, one module each, in one ordered registry.

Each module declares its families once (name, role, what they test: ``comparison.Family``), builds its
comparisons from the design and renders its own section of ``summary.md``. ``REGISTRY`` is the order they are
computed and listed in ``statistics.json``; each declares where its section stands (``section_rank``). The
families, the questions and their roles are read from here, nowhere else. Adding an analysis is one module
and one line here.
"""

from __future__ import annotations

from reporting.analyses import (
    aa,
    ablation,
    attribution,
    behaviour,
    cells,
    corpus,
    damage_by_temperature,
    endpoint,
    exploratory,
    failures,
    frontier,
    inert_aa,
    manipulation,
    placebo,
    q1_resilience,
    q2_optimal_level,
    q3_temperature,
    q4_high_pruning,
    q5_quality_metrics,
    recovery,
    replication,
    strategies,
)
from reporting.analyses.base import Analysis
from reporting.comparison import Family

REGISTRY: tuple[Analysis, ...] = (
    endpoint.ANALYSIS,
    q1_resilience.ANALYSIS,
    q2_optimal_level.ANALYSIS,
    q3_temperature.ANALYSIS,
    q4_high_pruning.ANALYSIS,
    q5_quality_metrics.ANALYSIS,
    damage_by_temperature.ANALYSIS,
    corpus.ANALYSIS,
    aa.ANALYSIS,
    ablation.ANALYSIS,
    recovery.ANALYSIS,
    exploratory.ANALYSIS,
    attribution.ANALYSIS,
    strategies.ANALYSIS,
    inert_aa.ANALYSIS,
    failures.ANALYSIS,
    placebo.ANALYSIS,
    frontier.ANALYSIS,
    replication.ANALYSIS,
    behaviour.ANALYSIS,  # the rest describe and check, and test nothing of their own
    manipulation.ANALYSIS,
    cells.ANALYSIS,
)
FAMILIES: tuple[Family, ...] = tuple(family for analysis in REGISTRY for family in analysis.families)
QUESTIONS = {
    str(module.ANALYSIS.families[0]): module.QUESTION
    for module in (q1_resilience, q2_optimal_level, q3_temperature, q4_high_pruning, q5_quality_metrics)
}
PRIMARY_FAMILIES = tuple(str(f) for f in FAMILIES if f.role == "primary")  # one Holm adjustment, per report

SECTIONS = tuple(sorted((a for a in REGISTRY if a.section is not None), key=lambda a: a.section_rank))

__all__ = ["FAMILIES", "PRIMARY_FAMILIES", "QUESTIONS", "REGISTRY", "SECTIONS", "Analysis"]
