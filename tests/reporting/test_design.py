"""The design the records describe: arms, series, cells, what may be pooled and what must be compared."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from synthetic import AGENCY, BASELINE, QUICKSTART, Grid, agency, build_records, make_record, write_run

from record.identity import condition_id, flatten
from reporting.design import (
    Arm,
    Cell,
    DesignError,
    Series,
    arm_labels,
    build_design,
    parse_where,
    shared_agency_settings,
)
from reporting.records import load_records

SMALL = Grid(levels=(0.0, 30.0), temperatures=(0.7,), prompts=6, repeats=3, layers=4, heads=6)
SWEPT = {"model.pruning.level", "model.agency.enabled", "model.generation.temperature"}


def test_the_quickstart_design_has_one_series_two_temperatures_four_levels_and_two_arms() -> None:
    design = build_design(build_records(replace(QUICKSTART, layers=4, heads=6)), SWEPT)
    (series,) = design.series()
    assert series == Series("embedded", "entropy_low") and series.label() == "embedded / entropy_low"
    assert design.temperatures() == [0.7, 1.0] and design.levels() == [0.0, 30.0, 50.0, 70.0]
    assert design.arms() == [Arm("baseline"), Arm("agency")] and design.agency_arms(series) == [Arm("agency")]
    assert len(design.cells) == 16 and all(len(members) == 1 for members in design.cells.values())
    first = next(iter(design.cells))
    assert first == Cell(series, 0.7, 0.0, Arm("baseline"))  # cells sort by series, temperature, level, arm
    assert not design.timed_alone()


def test_arms_are_the_baseline_the_main_agency_arm_and_variants_named_by_their_departures() -> None:
    grid = replace(SMALL, arms=(BASELINE, AGENCY, agency(sham=True), agency(state_gating=False)))
    records = build_records(grid)
    labels = arm_labels(records)
    by_id = {r.condition_id: flatten(r.config) for r in records}
    for cid, arm in labels.items():
        flat = by_id[cid]
        if not flat["model.agency.enabled"]:
            assert arm == Arm("baseline") and not arm.agency
        elif flat["model.agency.sham"]:
            assert arm.label == "agency(sham=true)" and not arm.main
        elif not flat["model.agency.state_gating"]:
            assert arm.label == "agency(state_gating=false)"
        else:
            assert arm == Arm("agency") and arm.main and arm.agency
    assert sorted({*labels.values()}) == [
        Arm("baseline"),
        Arm("agency"),
        Arm("agency(sham=true)"),
        Arm("agency(state_gating=false)"),
    ]
    design = build_design(records, {"model.pruning.level"})  # agency settings never refuse pooling
    assert design.agency_arms() == [Arm("agency")]
    assert sum("_sham_" in r.condition_id for r in records) == 2  # the harness's ids name the sham control
    assert all(r.condition_id == condition_id(r.config) for r in records)


def test_agency_arms_are_all_primary_when_none_is_the_main_one() -> None:
    records = build_records(
        replace(SMALL, arms=(BASELINE, agency(overload_margin=0.1), agency(overload_margin=0.2)))
    )
    design = build_design(records, {"model.pruning.level"})
    assert [a.label for a in design.agency_arms()] == [
        "agency(overload_margin=0.1)",
        "agency(overload_margin=0.2)",
    ]


def test_records_that_differ_in_a_setting_that_is_not_compared_are_not_pooled() -> None:
    records = build_records(SMALL) + build_records(replace(SMALL, config=(("model.generation.top_p", 0.9),)))
    with pytest.raises(DesignError) as error:
        build_design(records, {"model.pruning.level", "model.agency.enabled"})
    message = str(error.value)
    assert "model.generation.top_p: 1, 0.9" in message
    assert "--where" in message and "--split-by" in message


def test_where_keeps_the_records_with_that_value() -> None:
    records = build_records(SMALL) + build_records(replace(SMALL, config=(("model.generation.top_p", 0.9),)))
    design = build_design(records, {"model.pruning.level"}, where=parse_where(["model.generation.top_p=0.9"]))
    assert len(design.records) == 4
    assert {flatten(r.config)["model.generation.top_p"] for r in design.records} == {0.9}
    empty = build_design(records, where=[("model.pruning.mode", "remove")])
    assert empty.records == [] and empty.cells == {}


def test_where_values_are_read_as_yaml_and_need_an_equals_sign() -> None:
    assert parse_where(
        ["model.pruning.mode=remove", "model.pruning.level=30", " model.agency.sham = true"]
    ) == [("model.pruning.mode", "remove"), ("model.pruning.level", 30), ("model.agency.sham", True)]
    with pytest.raises(DesignError, match="KEY=VALUE"):
        parse_where(["model.pruning.level"])


def test_split_by_makes_a_setting_a_series_key() -> None:
    records = build_records(SMALL) + build_records(replace(SMALL, config=(("model.generation.top_p", 0.9),)))
    design = build_design(records, {"model.pruning.level"}, split_by=["model.generation.top_p"])
    assert design.split_keys == ("model.generation.top_p",)
    assert [s.label() for s in design.series()] == [
        "embedded / entropy_low / top_p=0.9",
        "embedded / entropy_low / top_p=1",
    ]
    assert all(len(members) == 1 for members in design.cells.values()) and len(design.cells) == 8


def test_keys_a_sweep_file_varied_are_series_keys(tmp_path: Path) -> None:
    write_run(tmp_path / "run", SMALL, sweep_extra={"model.pruning.mode": ["mask", "remove"]})
    write_run(
        tmp_path / "run", replace(SMALL, config=(("model.pruning.mode", "remove"),)), seed=1, sweep=False
    )
    loaded = load_records([tmp_path / "run"])
    assert "model.pruning.mode" in loaded.swept_keys
    design = build_design(loaded.records, loaded.swept_keys)
    assert design.split_keys == (
        "model.pruning.mode",
    )  # standard factors and agency keys are not series keys
    assert [s.split for s in design.series()] == [
        (("model.pruning.mode", "mask"),),
        (("model.pruning.mode", "remove"),),
    ]


def test_seeds_are_replicates_pooled_per_prompt() -> None:
    grid = replace(SMALL, seeds=(0, 1), iterations=2)
    design = build_design(build_records(grid), {"model.pruning.level", "model.seed"})
    cell = Cell(design.series()[0], 0.7, 30.0, Arm("baseline"))
    members = design.cells[cell]
    assert len(members) == 2 and design.seeds(cell) == [0, 1]
    values = design.prompt_values(cell, "reference_perplexity")
    assert sorted(values) == list(range(6))  # one unit per prompt, not per seed or iteration
    logs = [
        math.log(s.metrics["reference_perplexity"]) for r in members for s in r.samples if s.prompt_index == 2
    ]
    assert len(logs) == 4 and values[2] == pytest.approx(np.mean(logs))  # geometric mean of the 4 samples


def test_linear_metrics_are_averaged_as_they_are() -> None:
    record = make_record(
        samples={(0, 0): {"distinct_2": 0.5}, (0, 1): {"distinct_2": 0.9}, (1, 0): {"distinct_2": 0.7}}
    )
    design = build_design([record])
    cell = next(iter(design.cells))
    assert design.prompt_values(cell, "distinct_2") == {0: pytest.approx(0.7), 1: pytest.approx(0.7)}
    assert design.prompt_values(cell, "reference_perplexity") == {}


def test_arms_timed_alone_are_flagged() -> None:
    design = build_design(build_records(replace(SMALL, schedule="alone")), {"model.pruning.level"})
    assert design.timed_alone()
    sessions = {r.timing.session for r in design.records}
    assert len(sessions) == len(design.records)


def test_a_single_variant_is_named_against_the_defaults_the_harness_records() -> None:
    """With one variant a majority cannot say which arm is the default agency layer: the harness records the
    settings each arm departs from the defaults in (model.agency.departures), and the labels use them."""
    records = build_records(
        replace(SMALL, arms=(BASELINE, agency(departures=[]), agency(sham=True, departures=["sham"])))
    )
    labels = sorted(set(arm_labels(records).values()))
    assert labels == [Arm("baseline"), Arm("agency"), Arm("agency(sham=true)")]
    design = build_design(records, {"model.pruning.level"})
    assert design.agency_arms() == [Arm("agency")]  # the sham control stays out of the primary families


def test_a_tuning_setting_every_agency_arm_shares_is_stated_once_not_in_every_label() -> None:
    """The quickstart screens 8 misalignment candidates (default 16) in every agency arm: the main arm is still
    'agency'; a sham or a component switched off is never shared away, so a lone sham arm is never 'agency'."""
    tuned = {"misalignment_candidates": 8}
    records = build_records(
        replace(
            SMALL,
            arms=(
                BASELINE,
                agency(departures=["misalignment_candidates"], **tuned),
                agency(sham=True, departures=["misalignment_candidates", "sham"], **tuned),
            ),
        )
    )
    assert shared_agency_settings(records) == ["misalignment_candidates=8"]
    assert sorted(set(arm_labels(records).values())) == [
        Arm("baseline"),
        Arm("agency"),
        Arm("agency(sham=true)"),
    ]
    lone_sham = build_records(replace(SMALL, arms=(BASELINE, agency(sham=True, departures=["sham"]))))
    assert shared_agency_settings(lone_sham) == []
    assert sorted(set(arm_labels(lone_sham).values())) == [Arm("baseline"), Arm("agency(sham=true)")]


def test_forced_head_states_are_named_by_state_layer_and_heads_in_one_line() -> None:
    """A label or note carries ``head_overrides`` compactly but as distinct as the list: other heads, another state
    or consent withheld give another text, so arms that force different heads are never merged."""
    first_two_layers = [
        {"layer": float(layer), "head": float(h), "state": "withdrawn"} for layer in (0, 1) for h in range(9)
    ]
    late = [{"layer": 28, "head": h, "state": "withdrawn"} for h in (0, 1, 2, 5)]
    refusing = [{"layer": 3, "head": 1, "state": None, "consent": False}]
    records = build_records(
        replace(
            SMALL,
            arms=(
                BASELINE,
                agency(departures=["head_overrides"], head_overrides=first_two_layers),
                agency(departures=["head_overrides"], head_overrides=late),
                agency(departures=["head_overrides"], head_overrides=refusing),
            ),
        )
    )
    assert sorted(a.label for a in set(arm_labels(records).values())) == [
        "agency(head_overrides=unforced without consent L3 h1)",
        "agency(head_overrides=withdrawn L0 h0-8, L1 h0-8)",
        "agency(head_overrides=withdrawn L28 h0-2,5)",
        "baseline",
    ]
