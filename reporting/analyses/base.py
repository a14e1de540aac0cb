"""What an analysis declares: its families (name, role, description, once) and how it builds its comparisons."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from reporting.comparison import Comparison, Family
from reporting.design import Arm, Design, Series
from reporting.units import Units

PerArm = Callable[[Design, Series, Arm, Units], list[Comparison]]
Whole = Callable[[Design, Units], list[Comparison]]
Describe = Callable[
    [Design, Units], list[Any]
]  # descriptions that test nothing (dataclasses, in statistics.json)
Section = Callable[[Any], list[str]]  # renders from reporting.results.Statistics (which imports analyses)


@dataclass(frozen=True)
class Analysis:
    """One analysis of a report.

    ``per_arm`` builds its comparisons for one series and one agency arm that answers the questions (the primary
    endpoint and the five questions); ``compare`` builds them from the whole design; ``describe`` builds
    descriptions that test nothing (``Statistics.descriptions[name]``, written under ``descriptions``). Its families carry the role
    (primary, secondary, exploratory) every comparison it makes is corrected and read under. ``section`` renders
    its part of ``summary.md`` from the report's results; an analysis may describe without testing (no family).
    """

    name: str
    families: tuple[Family, ...]
    per_arm: PerArm | None = None
    compare: Whole | None = None
    describe: Describe | None = None
    section: Section | None = None
    section_rank: int = 0  # where its section stands in summary.md (lower first)
