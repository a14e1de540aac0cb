"""Lookups the figures share: which series exist, an arm's line along the levels, a cell's description.

Figures only draw; deciding which numbers belong on an axis is done here, so
every figure shows the numbers the summary reports.
"""

from __future__ import annotations

from dataclasses import dataclass

from reporting.design import Arm, Cell, Series
from reporting.results import Description, Statistics


class Skip(Exception):
    """A figure whose data are absent: it is not drawn, and the reason is noted."""


@dataclass(frozen=True)
class ArmLine:
    """One arm's means and 95% intervals of one metric along the pruning levels (natural units)."""

    levels: list[float]
    means: list[float]
    lower: list[float]  # distance from the mean to the interval's end; NaN where there is no interval
    upper: list[float]


class PlotData:
    """Indexes a ``Statistics`` object for drawing."""

    def __init__(self, stats: Statistics) -> None:
        self.stats = stats
        self._cells = {c.cell: c for c in stats.cells}

    def series(self) -> list[Series]:
        return sorted({c.series for c in self._cells})

    def temperatures(self, series: Series) -> list[float]:
        return sorted({c.temperature for c in self._cells if c.series == series})

    def levels(self, series: Series) -> list[float]:
        return sorted({c.level for c in self._cells if c.series == series})

    def arms(self, series: Series) -> list[Arm]:
        """The baseline and the main agency arm (every agency arm when none is the main one)."""
        arms = sorted({c.arm for c in self._cells if c.series == series})
        main = [a for a in arms if a.main]
        return main if any(a.agency for a in main) else arms

    def front(self, series: Series, arm: Arm) -> tuple[set[float], str | None]:
        """The arm's speed/quality Pareto levels, or why there are none (e.g. mask mode)."""
        found = next((f for f in self.stats.fronts if f.series == series and f.arm == arm), None)
        if found is None:
            return set(), None
        return set(found.front), found.note if not found.points else None

    def usable_levels(self, series: Series, arm: Arm) -> set[float] | None:
        """The levels the arm's front was drawn from (within the quality bound); None: no front computed."""
        found = next((f for f in self.stats.fronts if f.series == series and f.arm == arm), None)
        if found is None or not found.points:
            return None
        return {p.level for p in found.points}

    def description(self, cell: Cell, name: str) -> Description | None:
        stats = self._cells.get(cell)
        found = stats.metrics.get(name) if stats else None
        return found if found is not None and found.mean is not None else None

    def has_metric(self, series: Series, name: str) -> bool:
        return any(self.description(c, name) is not None for c in self._cells if c.series == series)

    def arm_line(self, series: Series, temperature: float, arm: Arm, name: str) -> ArmLine | None:
        """One arm's values along the levels at one temperature, with their intervals (missing levels skipped)."""
        levels, means, lower, upper = [], [], [], []
        for level in self.levels(series):
            d = self.description(Cell(series, temperature, level, arm), name)
            if d is None or d.mean is None:
                continue
            levels.append(level)
            means.append(d.mean)
            lower.append(d.mean - d.ci_low if d.ci_low is not None else float("nan"))
            upper.append(d.ci_high - d.mean if d.ci_high is not None else float("nan"))
        return ArmLine(levels, means, lower, upper) if levels else None
