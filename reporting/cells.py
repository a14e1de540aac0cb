"""How records are grouped: cells, comparison points, series, and baseline/agency pairs.

A *cell* pools every record (all seeds) that shares model, pruning method,
temperature, pruning level and arm. A *point* is a cell without its arm: where
baseline and agency are compared. A *series* is a point without its level:
what a slope is fitted over. Pairs match a baseline record to the agency
record of the same condition so that differences are paired sample by sample.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

Record = dict[str, Any]

# Config keys that may differ between the two records of a pair: the arm itself,
# and how the agency arm chooses heads (a baseline has no such choice).
UNPAIRED_KEYS: frozenset[str] = frozenset({"agency", "pruning_policy"})


@dataclass(frozen=True, order=True)
class Series:
    """Everything a slope vs pruning level is fitted within."""

    model: str
    pruning_method: str
    temperature: float

    def label(self) -> str:
        return f"{self.model} / {self.pruning_method} / T={self.temperature:g}"


@dataclass(frozen=True, order=True)
class Point:
    """One comparison point between baseline and agency."""

    model: str
    pruning_method: str
    temperature: float
    pruning_level: float

    @property
    def series(self) -> Series:
        return Series(self.model, self.pruning_method, self.temperature)

    def label(self) -> str:
        return f"{self.series.label()} / {self.pruning_level:g}%"


@dataclass(frozen=True, order=True)
class Cell:
    """One arm at one comparison point: the unit that means and intervals are given for."""

    model: str
    pruning_method: str
    temperature: float
    pruning_level: float
    agency: bool

    @property
    def point(self) -> Point:
        return Point(self.model, self.pruning_method, self.temperature, self.pruning_level)

    @property
    def arm(self) -> str:
        return "agency" if self.agency else "baseline"

    def label(self) -> str:
        return f"{self.point.label()} / {self.arm}"


def cell_of(record: Record) -> Cell:
    config = record["config"]
    return Cell(
        model=str(config["model"]),
        pruning_method=str(config["pruning_method"]),
        temperature=float(config["temperature"]),
        pruning_level=float(config["pruning_level"]),
        agency=bool(config["agency"]),
    )


def group_by_cell(records: list[Record]) -> dict[Cell, list[Record]]:
    groups: dict[Cell, list[Record]] = defaultdict(list)
    for record in records:
        groups[cell_of(record)].append(record)
    return dict(sorted(groups.items()))


def pairing_key(record: Record) -> str:
    """The condition a record belongs to once its arm is forgotten."""
    config = {k: v for k, v in record["config"].items() if k not in UNPAIRED_KEYS}
    return json.dumps(config, sort_keys=True, default=str)


@dataclass(frozen=True)
class Pairs:
    """Baseline/agency record pairs per comparison point, and records that found no partner."""

    by_point: dict[Point, list[tuple[Record, Record]]]
    problems: list[str]


def pair_records(records: list[Record]) -> Pairs:
    """Match each agency record with the baseline record whose config differs only in the arm."""
    arms: dict[str, dict[bool, list[Record]]] = defaultdict(lambda: {False: [], True: []})
    for record in records:
        arms[pairing_key(record)][bool(record["config"]["agency"])].append(record)
    by_point: dict[Point, list[tuple[Record, Record]]] = defaultdict(list)
    problems: list[str] = []
    for both in arms.values():
        baselines = sorted(both[False], key=lambda r: str(r["condition_id"]))
        agencies = sorted(both[True], key=lambda r: str(r["condition_id"]))
        if len(baselines) > 1 or len(agencies) > 1:
            ids = [r["condition_id"] for r in baselines + agencies]
            problems.append(
                f"conditions {ids} share one config apart from the arm; only the first of each arm is paired"
            )
        if baselines and agencies:
            by_point[cell_of(baselines[0]).point].append((baselines[0], agencies[0]))
    return Pairs(dict(sorted(by_point.items())), problems)


def paired_sample_values(baseline: Record, agency: Record, name: str) -> tuple[list[float], list[float]]:
    """Values of one per-sample metric for the (prompt_index, iteration) keys measured in both arms."""

    def by_key(record: Record) -> dict[tuple[int, int], float]:
        return {
            (int(s["prompt_index"]), int(s["iteration"])): float(s["metrics"][name])
            for s in record["samples"]
            if name in s.get("metrics", {})
        }

    base, agen = by_key(baseline), by_key(agency)
    keys = sorted(base.keys() & agen.keys())
    return [base[k] for k in keys], [agen[k] for k in keys]
