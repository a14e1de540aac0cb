"""All numbers of a report, computed from result records with ``scipy.stats``.

What is compared with what lives here: per-cell descriptions, paired
agency-minus-baseline tests per comparison point, slopes vs pruning level per
arm and their difference, and whether the agency effect changes with
temperature. Each kind of test is one Holm family over everything in the
report; the paired Wilcoxon signed-rank test is the one that decides
"significant" (the paired t-test is given beside it).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from reporting.cells import (
    Cell,
    Point,
    Record,
    Series,
    group_by_cell,
    pair_records,
    paired_sample_values,
)
from reporting.estimators import (
    Description,
    PairedTest,
    SlopeDifference,
    SlopeFit,
    describe,
    fit_slope,
    holm,
    kruskal_across,
    paired_test,
    slope_difference,
)
from reporting.metrics import ALL_METRICS, CONDITION_METRIC_NAMES, SAMPLE_METRIC_NAMES, metric

ALPHA = 0.05
# Model size (parameters, FLOPs) is set by the pruning, not measured with noise: described, never tested.
TESTED_METRIC_NAMES = tuple(
    n for n in (*SAMPLE_METRIC_NAMES, *CONDITION_METRIC_NAMES) if metric(n).kind != "size"
)

FAMILIES = {
    "paired_wilcoxon": "Wilcoxon signed-rank p of agency - baseline, every comparison point x metric (decides significance)",
    "paired_ttest": "paired t-test p of agency - baseline, every comparison point x metric",
    "slope_difference": "p of (agency slope - baseline slope) vs pruning level, every series x metric",
    "temperature": "Kruskal-Wallis p: do paired differences differ between temperatures, every level x metric",
}


@dataclass
class AgencySummary:
    """What the agency layer reported in one cell, averaged over its records."""

    n_records: int
    state_counts_end: dict[str, float]
    state_counts_mean: dict[str, float]
    withholding_consent: float | None
    violations: dict[str, int]


@dataclass
class CellStats:
    cell: Cell
    n_records: int
    seeds: list[Any]
    condition_ids: list[str]
    sample: dict[str, Description]
    condition: dict[str, Description]
    agency: AgencySummary | None


@dataclass
class PairedRow:
    """Agency minus baseline at one comparison point for one metric, pooled over seeds."""

    point: Point
    metric: str
    per_sample: bool
    n_record_pairs: int
    baseline_mean: float | None
    agency_mean: float | None
    test: PairedTest
    relative_gain: float | None  # direction-aware: > 0 means agency better; fraction of baseline
    relative_gain_ci: tuple[float, float] | None
    p_wilcoxon_holm: float | None = None
    p_ttest_holm: float | None = None

    def significant(self, alpha: float = ALPHA) -> bool:
        return self.p_wilcoxon_holm is not None and self.p_wilcoxon_holm < alpha

    @property
    def gain(self) -> float | None:
        """Mean difference signed so that > 0 means agency is better."""
        d = self.test.mean_difference
        return None if d is None else metric(self.metric).sign * d


@dataclass
class SlopeRow:
    series: Series
    metric: str
    baseline: SlopeFit | None
    agency: SlopeFit | None
    difference: SlopeDifference | None
    p_holm: float | None = None

    def significant(self, alpha: float = ALPHA) -> bool:
        return self.p_holm is not None and self.p_holm < alpha


@dataclass
class TemperatureRow:
    model: str
    pruning_method: str
    pruning_level: float
    metric: str
    temperatures: list[float]
    n: list[int]
    mean_differences: list[float | None]
    p: float | None
    note: str | None
    p_holm: float | None = None

    def significant(self, alpha: float = ALPHA) -> bool:
        return self.p_holm is not None and self.p_holm < alpha


@dataclass
class Statistics:
    alpha: float
    cells: list[CellStats]
    paired: list[PairedRow]
    slopes: list[SlopeRow]
    temperature: list[TemperatureRow]
    problems: list[str] = field(default_factory=list)

    def cell(self, cell: Cell) -> CellStats | None:
        return next((c for c in self.cells if c.cell == cell), None)

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain dicts and lists; making it strict JSON (NaN -> null) is the writer's job."""
        return {
            "alpha": self.alpha,
            "families": FAMILIES,
            "significance": "paired: Holm-adjusted Wilcoxon p < alpha; slopes and temperature: Holm-adjusted p < alpha",
            "slope_units": "metric units per percentage point of pruning",
            "relative_gain": "sign * (agency - baseline) / |baseline mean|, sign = +1 when higher is better",
            "cells": [dataclasses.asdict(c) for c in self.cells],
            "paired": [
                {**dataclasses.asdict(r), "significant": r.significant(self.alpha)} for r in self.paired
            ],
            "slopes": [
                {**dataclasses.asdict(r), "significant": r.significant(self.alpha)} for r in self.slopes
            ],
            "temperature": [
                {**dataclasses.asdict(r), "significant": r.significant(self.alpha)} for r in self.temperature
            ],
            "problems": self.problems,
        }


def _sample_values(records: list[Record], name: str) -> tuple[list[float], int]:
    values = [
        float(s["metrics"][name]) for r in records for s in r["samples"] if name in s.get("metrics", {})
    ]
    failed = sum(name in s.get("failures", {}) for r in records for s in r["samples"])
    return values, failed


def _condition_values(records: list[Record], name: str) -> tuple[list[float], int]:
    values = [
        float(r["condition_metrics"][name]) for r in records if name in (r.get("condition_metrics") or {})
    ]
    failed = sum(any(f.get("metric") == name for f in r.get("failures") or []) for r in records)
    return values, failed


def _agency_summary(records: list[Record]) -> AgencySummary | None:
    reports = [r["agency"] for r in records if isinstance(r.get("agency"), dict)]
    if not reports:
        return None

    def mean_counts(key: str) -> dict[str, float]:
        totals: dict[str, float] = defaultdict(float)
        for report in reports:
            for state, count in (report.get(key) or {}).items():
                totals[state] += float(count)
        return {state: total / len(reports) for state, total in sorted(totals.items())}

    violations: dict[str, int] = defaultdict(int)
    for report in reports:
        for kind, count in (report.get("violations") or {}).items():
            violations[kind] += int(count)
    withholding = [
        float(r["withholding_consent"]) for r in reports if r.get("withholding_consent") is not None
    ]
    return AgencySummary(
        n_records=len(reports),
        state_counts_end=mean_counts("state_counts_end"),
        state_counts_mean=mean_counts("state_counts_mean"),
        withholding_consent=sum(withholding) / len(withholding) if withholding else None,
        violations=dict(sorted(violations.items())),
    )


def measured_names(records: list[Record]) -> tuple[set[str], set[str]]:
    """Per-sample and per-condition metric names that any record measured or tried to."""
    sample = {
        n for r in records for s in r["samples"] for n in (*s.get("metrics", {}), *s.get("failures", {}))
    }
    condition = {n for r in records for n in r.get("condition_metrics") or {}}
    condition |= {f["metric"] for r in records for f in r.get("failures") or [] if f.get("metric")}
    return sample, condition


def describe_cells(records: list[Record]) -> list[CellStats]:
    sample_names, condition_names = measured_names(records)
    result = []
    for cell, members in group_by_cell(records).items():
        sample = {n: describe(*_sample_values(members, n)) for n in SAMPLE_METRIC_NAMES if n in sample_names}
        condition = {
            n: describe(*_condition_values(members, n))
            for n in CONDITION_METRIC_NAMES
            if n in condition_names
        }
        result.append(
            CellStats(
                cell=cell,
                n_records=len(members),
                seeds=sorted({r["config"].get("seed") for r in members}, key=str),
                condition_ids=[str(r["condition_id"]) for r in members],
                sample=sample,
                condition=condition,
                agency=_agency_summary(members),
            )
        )
    return result


def _paired_row(point: Point, name: str, pairs: list[tuple[Record, Record]]) -> PairedRow | None:
    per_sample = ALL_METRICS[name].per_sample
    base: list[float] = []
    agen: list[float] = []
    for b, a in pairs:
        if per_sample:
            bv, av = paired_sample_values(b, a, name)
        else:
            bc, ac = b.get("condition_metrics") or {}, a.get("condition_metrics") or {}
            bv, av = ([bc[name]], [ac[name]]) if name in bc and name in ac else ([], [])
        base += bv
        agen += av
    if not base:
        return None
    test = paired_test(base, agen)
    baseline_mean = sum(base) / len(base)
    agency_mean = sum(agen) / len(agen)
    sign = metric(name).sign
    relative = relative_ci = None
    if baseline_mean != 0 and test.mean_difference is not None:
        scale = sign / abs(baseline_mean)
        relative = test.mean_difference * scale
        if test.ci_low is not None:
            ends = sorted((test.ci_low * scale, test.ci_high * scale))
            relative_ci = (ends[0], ends[1])
    return PairedRow(
        point, name, per_sample, len(pairs), baseline_mean, agency_mean, test, relative, relative_ci
    )


def paired_rows(records: list[Record]) -> tuple[list[PairedRow], list[str]]:
    pairs = pair_records(records)
    rows = []
    for point, point_pairs in pairs.by_point.items():
        for name in TESTED_METRIC_NAMES:
            row = _paired_row(point, name, point_pairs)
            if row is not None:
                rows.append(row)
    return rows, pairs.problems


def _arm_points(records: list[Record], name: str) -> tuple[list[float], list[float]]:
    levels: list[float] = []
    values: list[float] = []
    for record in records:
        level = float(record["config"]["pruning_level"])
        if ALL_METRICS[name].per_sample:
            found = [float(s["metrics"][name]) for s in record["samples"] if name in s.get("metrics", {})]
        else:
            cm = record.get("condition_metrics") or {}
            found = [float(cm[name])] if name in cm else []
        levels += [level] * len(found)
        values += found
    return levels, values


def slope_rows(records: list[Record]) -> list[SlopeRow]:
    by_series: dict[Series, dict[bool, list[Record]]] = defaultdict(lambda: {False: [], True: []})
    for cell, members in group_by_cell(records).items():
        by_series[cell.point.series][cell.agency] += members
    rows = []
    for series in sorted(by_series):
        arms = by_series[series]
        for name in (*SAMPLE_METRIC_NAMES, *CONDITION_METRIC_NAMES):
            fits = {
                agency: fit_slope(*_arm_points(arms[agency], name)) if arms[agency] else None
                for agency in arms
            }
            if all(f is None or f.n == 0 for f in fits.values()):
                continue
            base, agen = fits[False], fits[True]
            difference = slope_difference(base, agen) if base is not None and agen is not None else None
            rows.append(SlopeRow(series, name, base, agen, difference))
    return rows


def temperature_rows(paired: list[PairedRow], records: list[Record]) -> list[TemperatureRow]:
    """Compare the paired differences of one level across temperatures (per-sample metrics only)."""
    pairs = pair_records(records).by_point
    grouped: dict[tuple[str, str, float, str], dict[float, list[float]]] = defaultdict(dict)
    for row in paired:
        if not row.per_sample:
            continue
        point = row.point
        diffs: list[float] = []
        for b, a in pairs[point]:
            bv, av = paired_sample_values(b, a, row.metric)
            diffs += [y - x for x, y in zip(bv, av, strict=True)]
        grouped[(point.model, point.pruning_method, point.pruning_level, row.metric)][point.temperature] = (
            diffs
        )
    rows = []
    for (model, method, level, name), by_temperature in sorted(grouped.items()):
        if len(by_temperature) < 2:
            continue
        temperatures = sorted(by_temperature)
        groups = [by_temperature[t] for t in temperatures]
        p, note = kruskal_across(groups)
        means = [sum(g) / len(g) if g else None for g in groups]
        rows.append(
            TemperatureRow(model, method, level, name, temperatures, [len(g) for g in groups], means, p, note)
        )
    return rows


def _apply_holm(rows: list[Any], get: Any, put: Any) -> None:
    for row, adjusted in zip(rows, holm([get(r) for r in rows]), strict=True):
        put(row, adjusted)


def compute_statistics(records: list[Record], alpha: float = ALPHA) -> Statistics:
    """Describe every cell, test every pair, fit every slope, then Holm-adjust each family."""
    problems = []
    sample_names, condition_names = measured_names(records)
    unknown = sorted((sample_names | condition_names) - set(ALL_METRICS))
    if unknown:
        problems.append(f"metrics {unknown} are not in the reporting catalogue and are not reported")
    paired, pairing_problems = paired_rows(records)
    problems += pairing_problems
    slopes = slope_rows(records)
    temperature = temperature_rows(paired, records)
    _apply_holm(paired, lambda r: r.test.p_wilcoxon, lambda r, p: setattr(r, "p_wilcoxon_holm", p))
    _apply_holm(paired, lambda r: r.test.p_ttest, lambda r, p: setattr(r, "p_ttest_holm", p))
    _apply_holm(
        slopes, lambda r: r.difference.p if r.difference else None, lambda r, p: setattr(r, "p_holm", p)
    )
    _apply_holm(temperature, lambda r: r.p, lambda r, p: setattr(r, "p_holm", p))
    return Statistics(alpha, describe_cells(records), paired, slopes, temperature, problems)
