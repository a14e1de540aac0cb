"""Golden files: the report of fixed synthetic grids is byte-identical to the files kept in ``golden/``.

A change to ``reporting/`` that is meant as a reshaping (moving analyses into their own files, renaming,
merging helpers) must leave every byte of ``statistics.json`` and ``summary.md`` as it was; this test says so.
A change that is meant to alter the report regenerates the files and shows the difference in review:

    UPDATE_GOLDEN=1 python -m pytest tests/reporting/test_golden.py

Each grid exercises a part of the report: the quickstart (the endpoint, the questions, the speed A/A over
sessions), the attribution core with its ablations, sham, inert arm and forced states, strategies compared,
a protection dose-response, and recovered models. The records are built from seeds, so the files depend on
nothing but the code. A sixth case is the records of a real quickstart run, kept in ``golden/real_quickstart``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from synthetic import (
    BASELINE,
    QUICKSTART,
    agency,
    at_pruned_levels,
    build_records,
    growing,
    inert,
    protected,
    recovered,
    sweep_parameters,
    write_records,
    write_sweep,
)

from record.schema import ConditionRecord
from reporting.report import ReportOptions, write_report

GOLDEN = Path(__file__).parent / "golden"
FILES = ("statistics.json", "summary.md")
ONE_T = replace(QUICKSTART, temperatures=(0.7,))
MAIN = agency(departures=[])
WITHDRAWN = [{"layer": 0, "head": h, "state": "withdrawn", "consent": True} for h in range(9)]


def _quickstart() -> tuple[list[ConditionRecord], dict]:
    grid = replace(QUICKSTART, sessions=3, repeats=2, speed_aa=True).with_effects(
        ppl=growing(0.7), speed=at_pruned_levels(0.95)
    )
    return build_records(grid, seed=1), sweep_parameters(grid)


def _attribution() -> tuple[list[ConditionRecord], dict]:
    arms = (
        BASELINE,
        protected("gradient", 0.15, ppl=at_pruned_levels(0.8)),
        replace(agency(ppl=at_pruned_levels(0.8), departures=[]), acted=0.08),
        replace(agency(state_gating=False, departures=["state_gating"]), acted=0.08),
        replace(agency(consent_pruning=False, departures=["consent_pruning"]), acted=0.0),
        replace(agency(sham=True, departures=["sham"]), acted=0.07),
        inert(),
        agency(ppl=at_pruned_levels(1.5), head_overrides=WITHDRAWN, departures=["head_overrides"]),
    )
    grid = replace(ONE_T, levels=(0.0, 30.0, 50.0), arms=arms, sessions=3, repeats=2, speed_aa=True)
    return build_records(grid, seed=2), sweep_parameters(
        grid, {"model.pruning.protect": ["none", "gradient"]}
    )


def _strategies() -> tuple[list[ConditionRecord], dict]:
    entropy = replace(ONE_T, method="entropy_low", arms=(BASELINE, MAIN))
    gradient = replace(ONE_T, method="gradient", arms=(BASELINE,), method_ppl=at_pruned_levels(0.6))
    parameters = sweep_parameters(entropy, {"model.pruning.method": ["entropy_low", "gradient"]})
    return build_records(entropy, seed=3) + build_records(gradient, seed=3), parameters


def _dose() -> tuple[list[ConditionRecord], dict]:
    arms = (BASELINE, *(protected("gradient", f, ppl=at_pruned_levels(1 - f)) for f in (0.05, 0.15, 0.3)))
    grid = replace(ONE_T, levels=(0.0, 30.0, 50.0), arms=arms)
    extra = {"model.pruning.protect_fraction": [0.0, 0.05, 0.15, 0.3]}
    return build_records(grid, seed=4), sweep_parameters(grid, extra)


def _recovery() -> tuple[list[ConditionRecord], dict]:
    grid = replace(ONE_T, layers=4, heads=6)
    before = build_records(grid, seed=5)
    return before + [recovered(r, 3.0) for r in before], sweep_parameters(grid)


CASES: dict[str, Callable[[], tuple[list[ConditionRecord], dict]]] = {
    "quickstart": _quickstart,
    "attribution": _attribution,
    "strategies": _strategies,
    "dose": _dose,
    "recovery": _recovery,
}


# the records of a real make demo run (2026-12-07, embedded model), kept as they were
REAL = "real_quickstart"


@pytest.mark.parametrize("case", [*CASES, REAL])
def test_the_report_of_a_fixed_grid_is_byte_identical_to_its_golden_files(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if case == REAL:
        shutil.copytree(GOLDEN / REAL / "run_records", tmp_path / "run" / "records")
        shutil.copyfile(GOLDEN / REAL / "sweep.yaml", tmp_path / "run" / "sweep.yaml")
        monkeypatch.chdir(tmp_path)
    else:
        records, parameters = CASES[case]()
        monkeypatch.chdir(tmp_path)  # relative paths: the files name "run", not this test's folder
        write_records("run", records)
        write_sweep("run", parameters)
    write_report([Path("run")], Path("report"), ReportOptions(plots=False))
    for name in FILES:
        got = (Path("report") / name).read_bytes()
        golden = GOLDEN / case / name
        if os.environ.get("UPDATE_GOLDEN"):
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_bytes(got)
        assert golden.is_file(), f"{golden} is missing; run with UPDATE_GOLDEN=1 to write it"
        assert got == golden.read_bytes(), f"{case}/{name} differs from its golden file"
