"""Lookups the figures share: which series exist, a cell's description, a point's paired row.

Figures only draw; deciding which numbers belong on an axis is done here so
that every figure reads the same numbers the summary reports.
"""

from __future__ import annotations

from dataclasses import dataclass

from reporting.cells import Cell, Point, Series
from reporting.estimators import Description
from reporting.metrics import MEMORY_PREFERENCE
from reporting.statistics import PairedRow, Statistics


class Skip(Exception):
    """A figure whose data are absent: it is not drawn, and the reason is logged."""


@dataclass(frozen=True)
class ArmLine:
    """One arm's means and 95% intervals of one metric along the pruning levels."""

    levels: list[float]
    means: list[float]
    lower: list[float]  # distance from mean to interval end; NaN where no interval
    upper: list[float]


class PlotData:
    """Indexes a ``Statistics`` object for drawing."""

    def __init__(self, stats: Statistics) -> None:
        self.stats = stats
        self._cells = {c.cell: c for c in stats.cells}
        self._paired = {(r.point, r.metric): r for r in stats.paired}

    def series(self) -> list[Series]:
        return sorted({c.point.series for c in self._cells})

    def model_methods(self) -> list[tuple[str, str]]:
        return sorted({(s.model, s.pruning_method) for s in self.series()})

    def temperatures(self, model: str, method: str) -> list[float]:
        return sorted(
            {s.temperature for s in self.series() if (s.model, s.pruning_method) == (model, method)}
        )

    def levels(self, series: Series | None = None) -> list[float]:
        return sorted({c.pruning_level for c in self._cells if series is None or c.point.series == series})

    def description(self, cell: Cell, name: str) -> Description | None:
        stats = self._cells.get(cell)
        if stats is None:
            return None
        found = stats.sample.get(name) or stats.condition.get(name)
        return found if found is not None and found.mean is not None else None

    def has_metric(self, name: str, series: Series | None = None) -> bool:
        return any(
            self.description(c, name) is not None
            for c in self._cells
            if series is None or c.point.series == series
        )

    def memory_metric(self, series: Series | None = None) -> str | None:
        return next((m for m in MEMORY_PREFERENCE if self.has_metric(m, series)), None)

    def arm_line(self, series: Series, agency: bool, name: str) -> ArmLine | None:
        levels, means, lower, upper = [], [], [], []
        for lvl in self.levels(series):
            cell = Cell(series.model, series.pruning_method, series.temperature, lvl, agency)
            d = self.description(cell, name)
            if d is None:
                continue
            levels.append(lvl)
            means.append(d.mean)
            lower.append(d.mean - d.ci_low if d.ci_low is not None else float("nan"))
            upper.append(d.ci_high - d.mean if d.ci_high is not None else float("nan"))
        return ArmLine(levels, means, lower, upper) if levels else None

    def paired(self, point: Point, name: str) -> PairedRow | None:
        return self._paired.get((point, name))

    def has_pairs(self, model: str, method: str) -> bool:
        return any(p.model == model and p.pruning_method == method for p, _ in self._paired)
