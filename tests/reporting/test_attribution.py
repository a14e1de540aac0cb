"""Attribution (contract 12), strategies, the manipulation check (contract 13) and the A/A at every pruned level.

Synthetic records carry the pruning-side protection (``model.pruning.protect``, ``protect_fraction``) and the
agency report's ``acted_share`` / ``gate_mass_removed`` as the harness writes them.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from dataclasses import replace

import pytest
from synthetic import (
    BASELINE,
    QUICKSTART,
    Grid,
    agency,
    at_pruned_levels,
    build_records,
    growing,
    inert,
    protected,
)

from reporting.analyses.attribution import (
    ATTRIBUTION_FAMILY,
    ATTRIBUTION_SWEEP,
    LAYER_FAMILY,
    PROTECTION_FAMILY,
)
from reporting.analyses.inert_aa import INERT_AA_FAMILY
from reporting.analyses.manipulation import SHAM_TOLERANCE, SHAM_UNMATCHED, UNINFORMATIVE, Dose, sham_verdict
from reporting.analyses.strategies import STRATEGY_FAMILY
from reporting.design import DesignError, build_design
from reporting.headline import HEADLINE_LINES
from reporting.statistics import compute_statistics
from reporting.summary import render_summary

ONE_T = replace(QUICKSTART, temperatures=(0.7,))
MAIN = agency(departures=[])
GRADIENT_15 = "baseline + gradient protection (15%)"
UNCENSORED_PPL = 1e12  # read perplexity uncensored, so 70% is not a tie of degenerate samples


def _report(grid: Grid, seed: int = 0):
    from reporting.units import Units

    records = build_records(grid, seed)
    stats = compute_statistics(build_design(records), Units(degenerate_perplexity=UNCENSORED_PPL))
    return stats, render_summary(stats, len(records), [])


def _section(text: str, heading: str) -> str:
    return text.split(heading, 1)[1].split("\n## ", 1)[0]


# -- design -----------------------------------------------------------------------------------------------
def test_protection_names_arms_of_one_series_and_other_settings_still_refuse_to_pool() -> None:
    dose = tuple(protected("gradient", f) for f in (0.0, 0.05, 0.15, 0.3))
    grid = replace(ONE_T, levels=(0.0, 30.0), arms=(BASELINE, *dose, protected("random", 0.15), MAIN))
    design = build_design(build_records(grid))
    assert len(design.series()) == 1
    assert [a.label for a in design.arms()] == [
        "baseline",  # the 0% protection too: it protects no head
        "baseline + gradient protection (5%)",
        "baseline + gradient protection (15%)",
        "baseline + gradient protection (30%)",
        "baseline + random protection (15%)",
        "agency",
    ]
    assert all(a.protected and not a.agency for a in design.protected_baselines())
    assert design.matched_control(design.series()[0], design.agency_arms()[0]).label == GRADIENT_15
    stats = compute_statistics(design)
    others = {c.arm.label for c in stats.family(PROTECTION_FAMILY) if c.level is None}
    assert others == {a.label for a in design.protected_baselines()} - {GRADIENT_15}
    assert {c.arm.label for c in stats.family(ATTRIBUTION_FAMILY) if c.arm.protected} == {GRADIENT_15}
    other = build_records(replace(grid, arms=(protected(),), config=(("model.pruning.mode", "remove"),)))
    with pytest.raises(DesignError, match="model.pruning.mode"):
        build_design(build_records(grid) + other)


def test_records_without_the_protection_key_are_unprotected_and_pool_with_new_ones() -> None:
    new = build_records(replace(ONE_T, levels=(30.0,), arms=(BASELINE,)), seed=1)
    old = []
    for record in build_records(replace(ONE_T, levels=(30.0,), arms=(BASELINE,)), seed=2):
        config = copy.deepcopy(record.config)
        for key in ("protect", "protect_fraction"):
            config["model"]["pruning"].pop(key)
        old.append(dataclasses.replace(record, config=config, condition_id=record.condition_id + "-old"))
    design = build_design(new + old)
    assert [a.label for a in design.arms()] == ["baseline"]
    assert len(next(iter(design.cells.values()))) == 2


def test_a_protected_fraction_of_0_is_the_baseline_the_dose_response_is_read_against() -> None:
    """The protection_dose sweep protects 0, 5, 15 and 30%: its 0% arm protects no head, so it is the baseline
    and the other fractions are each compared with it."""
    arms = tuple(protected(fraction=f) for f in (0.0, 0.05, 0.15, 0.30))
    stats, text = _report(replace(ONE_T, arms=arms))
    table = _section(text, "## Protected baselines against the baseline (secondary)")
    assert all(f"| baseline + gradient protection ({p}%) |" in table for p in (5, 15, 30))
    labels = [a.label for a in build_design(build_records(replace(ONE_T, arms=arms), 0)).arms()]
    assert labels[0] == "baseline" and "baseline + gradient protection (0%)" not in labels
    compared = {c.arm.label for c in stats.family(PROTECTION_FAMILY)}
    assert compared == {f"baseline + gradient protection ({p}%)" for p in (5, 15, 30)}


# -- attribution ---------------------------------------------------------------------------------------------
def test_a_gain_the_protected_control_explains_is_credited_to_the_pruning_choice_not_to_agency() -> None:
    gain = at_pruned_levels(0.6)
    stats, text = _report(
        replace(ONE_T, arms=(BASELINE, protected(ppl=gain), agency(ppl=gain, departures=[])))
    )
    (found,) = stats.attributions
    assert found.whole.significant(0.05) and found.whole.better()
    assert found.choice.significant(0.05) and not found.layer.significant(0.05)
    # per prompt on the log scale the whole effect is the sum of the two parts
    assert math.isclose(
        found.whole.effect.estimate, found.choice.effect.estimate + found.layer.effect.estimate, abs_tol=1e-12
    )
    assert found.layer.role == "primary" and found.choice.role == "secondary"
    assert {c.level for c in stats.family(ATTRIBUTION_FAMILY)} >= {30.0, 50.0, 70.0}
    expected = "the gain comes from the pruning choice (protecting gradient-important heads), not from the agency layer"
    assert found.sentence == expected
    assert expected in _section(text, "## Headline")
    assert not re.search(r"(?<!= )\bagency (arm )?better\b", text), (
        "agency is called better although the control explains it"
    )
    assert "gain explained by the pruning choice (the protected baseline), not by the agency layer" in text


def test_a_gain_of_the_run_time_layer_over_the_same_pruning_choice_is_credited_to_agency() -> None:
    stats, text = _report(
        replace(ONE_T, arms=(BASELINE, protected(), agency(ppl=at_pruned_levels(0.6), departures=[])))
    )
    (found,) = stats.attributions
    assert found.layer.family == LAYER_FAMILY and found.layer.significant(0.05) and found.layer.better()
    assert (
        found.sentence
        == "the gain comes from the run-time layer (the agency states), beyond its pruning choice"
    )
    assert "agency better" in _section(text, "## Primary endpoint")


def test_without_the_control_the_summary_says_the_effect_is_not_attributed_and_names_the_sweep() -> None:
    stats, text = _report(replace(ONE_T, arms=(BASELINE, MAIN)))
    assert not stats.attributions and not stats.family(LAYER_FAMILY)
    where = _section(text, "## Where the effect comes from")
    assert "not attributed" in where and ATTRIBUTION_SWEEP in where
    assert ATTRIBUTION_SWEEP in _section(text, "## Headline")


def test_the_headline_opens_the_summary_in_at_most_ten_lines_with_answer_source_speed_aa_and_limits() -> None:
    _, text = _report(replace(ONE_T, arms=(BASELINE, protected(), MAIN, inert())))
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings[0] == "## Headline" and headings.index("## Headline") < headings.index(
        "## Primary endpoint"
    )
    body = [line for line in _section(text, "## Headline").splitlines() if line.startswith("- ")]
    assert 0 < len(body) <= HEADLINE_LINES
    for part in ("Primary answer", "Where it comes from", "Speed cost", "A/A checks", "Limits"):
        assert any(f"**{part}" in line for line in body), part
    assert "n = 24 prompts" in body[-1] and "side by side" in body[-1]


def test_a_resilience_gain_the_control_shares_is_not_read_as_agency_degrading_less() -> None:
    damping = growing(0.3)  # both the protected baseline and the agency arm lose less as pruning rises
    stats, text = _report(
        replace(QUICKSTART, arms=(BASELINE, protected(ppl=damping), agency(ppl=damping, departures=[])))
    )
    gains = [c for c in stats.comparisons if c.family in ("Q1", "Q4") and c.significant(0.05) and c.better()]
    assert gains, "the simulated resilience gain should be detected"
    assert all(c.reading(0.05).startswith("gain not credited to the agency layer") for c in gains)
    for key in ("Q1", "Q4"):
        answer = _section(text, f"## {key[1]}.").split("**Answer:**", 1)[1]
        assert "agency degrades less" not in answer and "agency helps more" not in answer


# -- strategies ----------------------------------------------------------------------------------------------
def test_a_sweep_over_methods_contrasts_entropy_with_gradient_at_each_pruned_level() -> None:
    from reporting.units import Units

    entropy = replace(ONE_T, method="entropy_low", arms=(BASELINE, MAIN))
    gradient = replace(ONE_T, method="gradient", arms=(BASELINE,), method_ppl=at_pruned_levels(0.6))
    records = build_records(entropy) + build_records(gradient)
    design = build_design(records, swept={"model.pruning.method"})
    stats = compute_statistics(design, Units(degenerate_perplexity=UNCENSORED_PPL))
    rows = [c for c in stats.family(STRATEGY_FAMILY) if c.arm == c.other]
    assert {c.level for c in rows} == {None, 30.0, 50.0, 70.0}
    pooled = next(c for c in rows if c.level is None)
    assert pooled.role == "secondary" and pooled.significant(0.05)
    assert (
        pooled.reading(0.05) == "gradient degrades less" and math.exp(pooled.effect.estimate) > 1
    )  # entropy/gradient
    against_gradient = [c for c in stats.family(STRATEGY_FAMILY) if c.arm.agency]
    assert {c.level for c in against_gradient} == {None, 30.0, 50.0, 70.0}
    section = _section(render_summary(stats, len(records), []), "## Pruning strategies compared")
    assert (
        "**Answer:** gradient degrades least" in section
        and "entropy_low baseline / gradient baseline" in section
    )


# -- the manipulation check ------------------------------------------------------------------------------------
def test_an_ablation_of_states_that_never_acted_reads_uninformative() -> None:
    silent = replace(MAIN, acted=0.0)
    off = replace(agency(state_gating=False, departures=["state_gating"]), acted=0.0)
    stats, text = _report(replace(ONE_T, arms=(BASELINE, silent, off)))
    rows = [c for c in stats.family("ablation") if c.arm.label == "agency(state_gating=false)"]
    assert rows and all(c.reading(0.05) == UNINFORMATIVE for c in rows)
    variant_rows = [
        line
        for line in _section(text, "## The agency effect taken apart").splitlines()
        if line.startswith("| embedded / entropy_low / agency(state_gating=false) |")
    ]
    assert len(variant_rows) == 2 and all(line.endswith(f"| {UNINFORMATIVE} |") for line in variant_rows)
    assert "did not act" in _section(text, "## Manipulation check")


def test_an_ablation_of_states_that_acted_reads_normally() -> None:
    off = replace(agency(state_gating=False, departures=["state_gating"]), acted=0.0)
    stats, text = _report(replace(ONE_T, arms=(BASELINE, MAIN, off)))
    rows = [c for c in stats.family("ablation") if c.arm.label == "agency(state_gating=false)"]
    assert rows and all(c.reading(0.05) != UNINFORMATIVE for c in rows)
    table = _section(text, "## Manipulation check").split("\n### ", 1)[0].splitlines()
    (main_row,) = [line for line in table if "| 30% | agency |" in line]
    (off_row,) = [line for line in table if "| 30% | agency(state_gating=false) |" in line]
    assert main_row.endswith("| 5.00% | 0.0250 | acted |") and off_row.endswith("| did not act |")


def test_an_agency_arm_that_also_prunes_with_a_protection_is_no_ablation_of_the_agency_arm() -> None:
    """A grid over protection and agency (the attribution sweep) makes agency + protection arms: their pruning
    differs from the agency arm's, so comparing them with it says nothing about a switched-off part."""
    on_top = replace(MAIN, pruning=(("protect", "random"), ("protect_fraction", 0.15)))
    off = agency(state_gating=False, departures=["state_gating"])
    stats, text = _report(replace(ONE_T, arms=(BASELINE, protected(), MAIN, on_top, off)))
    labels = {c.arm.label for c in stats.family("ablation")}
    assert labels == {"agency", "agency(state_gating=false)"}
    assert "agency + random protection (15%)" in _section(text, "## Manipulation check")


def test_a_sham_that_never_acted_is_uninformative_whatever_the_main_arm_did() -> None:
    sham = replace(agency(sham=True, departures=["sham"]), acted=0.0)
    stats, _ = _report(replace(ONE_T, arms=(BASELINE, MAIN, sham)))
    rows = [c for c in stats.family("ablation") if c.arm.label == "agency(sham=true)"]
    assert rows and all(c.reading(0.05) == UNINFORMATIVE for c in rows)


def test_a_sham_with_the_real_arms_dose_is_matched_and_reads_as_a_comparison() -> None:
    sham = agency(sham=True, departures=["sham"])  # the same share and gate mass as the main arm
    stats, text = _report(replace(ONE_T, arms=(BASELINE, MAIN, sham)))
    rows = [c for c in stats.family("ablation") if c.arm.label == "agency(sham=true)"]
    assert rows and not any(c.reading(0.05).startswith(SHAM_UNMATCHED) for c in rows)
    table = _section(text, "## Manipulation check").split("### Is the sham matched", 1)[1]
    matched = [line for line in table.splitlines() if "| agency(sham=true) |" in line]
    assert len(matched) == len(ONE_T.levels) and all("| matched (within 10%" in line for line in matched)


def test_a_sham_is_compared_with_its_real_arm_when_every_agency_arm_departs_in_a_switch() -> None:
    """The states_sham sweep: consent pruning off in every agency arm, so none is the main arm; the sham
    ``agency(consent_pruning=false, sham=true)`` replays ``agency(consent_pruning=false)``."""
    real = agency(consent_pruning=False, departures=["consent_pruning"])
    sham = agency(consent_pruning=False, sham=True, departures=["consent_pruning", "sham"])
    stats, text = _report(replace(ONE_T, arms=(BASELINE, real, sham)))
    rows = [c for c in stats.family("ablation") if c.arm.label == "agency(consent_pruning=false, sham=true)"]
    assert rows and {c.other.label for c in rows} == {"agency(consent_pruning=false)"}
    assert all(
        "the heads the states damp matter" in c.contrast for c in rows if c.metric == "reference_perplexity"
    )
    table = _section(text, "## Manipulation check").split("### Is the sham matched", 1)[1]
    matched = [line for line in table.splitlines() if "| agency(consent_pruning=false, sham=true) |" in line]
    assert len(matched) == len(ONE_T.levels) and all("| matched (within 10%" in line for line in matched)


def test_a_sham_that_damped_less_than_the_real_arm_is_not_evidence_and_says_by_how_much() -> None:
    sham = replace(agency(sham=True, departures=["sham"]), acted=0.03)  # 3% of head-steps against 5%
    stats, text = _report(replace(ONE_T, arms=(BASELINE, MAIN, sham)))
    rows = [c for c in stats.family("ablation") if c.arm.label == "agency(sham=true)"]
    assert rows and all(c.reading(0.05).startswith(SHAM_UNMATCHED) for c in rows)
    assert "share -40.0%, gate mass -40.0%" in rows[0].reading(0.05)
    table = _section(text, "## Manipulation check").split("### Is the sham matched", 1)[1]
    assert table.count("| not matched: share -40.0%, gate mass -40.0%") == len(ONE_T.levels)


def test_arms_written_as_an_ablation_are_read_by_the_switch_they_ran_with() -> None:
    """A record keeps ``ablation: sham`` beside ``sham: false`` (and ``ablation: state_gating`` beside
    ``state_gating: true``) as the sweep wrote them; the report reads the switch the layer resolved."""
    sham = replace(agency(ablation="sham", departures=["sham"]), acted=0.03)
    silent = replace(MAIN, acted=0.0)
    off = replace(agency(ablation="state_gating", departures=["state_gating"]), acted=0.0)
    stats, _ = _report(replace(ONE_T, arms=(BASELINE, silent, sham, off)))
    labels = {c.arm.label for c in stats.family("ablation")}
    assert labels == {"agency", "agency(sham=true)", "agency(state_gating=false)"}
    readings = {c.arm.label: c.reading(0.05) for c in stats.family("ablation") if c.arm.label != "agency"}
    assert readings["agency(state_gating=false)"] == UNINFORMATIVE
    assert readings["agency(sham=true)"].startswith(SHAM_UNMATCHED)  # the sham acted, the real arm did not


@pytest.mark.parametrize(
    ("real", "sham", "matched", "said"),
    [
        (Dose(0.05, 0.02), Dose(0.054, 0.019), True, "matched (within 10%: share +8.0%, gate mass -5.0%)"),
        (Dose(0.05, 0.02), Dose(0.05, 0.025), False, "not matched: share +0.0%, gate mass +25.0%"),
        (Dose(0.0, 0.0), Dose(0.05, 0.02), False, UNINFORMATIVE + " (the real arm)"),
        (Dose(0.05, 0.02), Dose(0.001, 0.0), False, UNINFORMATIVE + " (the sham)"),
        (None, Dose(0.05, 0.02), False, "not recorded"),
    ],
)
def test_the_sham_is_matched_only_within_the_declared_tolerance_on_both_parts_of_the_dose(
    real, sham, matched, said
) -> None:
    assert SHAM_TOLERANCE == 0.10
    got = sham_verdict(real, sham)
    assert got[0] is matched and got[1].startswith(said)


def test_the_states_dose_response_orders_arms_by_gate_mass_and_states_the_trend() -> None:
    def states(quantile: float, acted: float, harm: float):
        arm = agency(
            ppl=at_pruned_levels(harm),
            consent_pruning=False,
            overload_quantile=quantile,
            departures=["consent_pruning", "overload_quantile"],
        )
        return replace(arm, acted=acted)

    arms = (BASELINE, states(0.99, 0.02, 1.0), states(0.9, 0.1, 1.3), states(0.5, 0.3, 1.8))
    _, text = _report(replace(ONE_T, levels=(0.0, 30.0), arms=arms))
    section = _section(text, "## Manipulation check").split("### Dose-response", 1)[1].split("\n### ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| embedded")]
    assert [row.split(" | ")[4] for row in rows] == ["0.0100", "0.0500", "0.1500"]  # ordered by gate mass
    assert all("| acted | ×" in row for row in rows)
    assert "Spearman rho = +1.00 over 3 arms: more gate mass removed goes with higher perplexity" in section


def test_a_dose_sweep_around_the_default_arm_reads_every_arm_not_only_the_main_one() -> None:
    """Three acting arms, the default one and two variants: the variants answer no question, yet each is a dose
    (they were dropped before, leaving "too few arms with distinct doses (1)")."""

    def variant(switch: str, acted: float, harm: float):
        arm = agency(ppl=at_pruned_levels(harm), **{switch: False}, departures=[switch])
        return replace(arm, acted=acted)

    main = replace(agency(ppl=at_pruned_levels(1.0)), acted=0.02)
    arms = (BASELINE, main, variant("misalignment", 0.1, 1.3), variant("overload", 0.3, 1.8))
    stats, text = _report(replace(ONE_T, levels=(0.0, 30.0), arms=arms))
    assert len(stats.family("dose")) == 2 and {c.role for c in stats.family("dose")} == {"exploratory"}
    section = _section(text, "## Manipulation check").split("### Dose-response", 1)[1].split("\n### ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| embedded")]
    assert len(rows) == 3 and all("| acted | ×" in row for row in rows)
    assert "Spearman rho = +1.00 over 3 arms" in section


# -- the A/A at every pruned level -------------------------------------------------------------------------------
def test_the_inert_agency_arm_is_an_a_a_at_every_pruned_level_beside_the_0_percent_check() -> None:
    stats, text = _report(replace(ONE_T, arms=(BASELINE, MAIN, inert())))
    rows = stats.family(INERT_AA_FAMILY)
    assert sorted(c.level for c in rows) == [30.0, 50.0, 70.0]
    assert all(c.reading(0.05) == "no significant difference" and c.role == "secondary" for c in rows)
    aa = _section(text, "## A/A check")
    assert "### A/A at every pruned level" in aa and aa.count("(within 1%)") >= 3 + len(stats.family("aa"))


# -- the report-level error rate with the controls in ------------------------------------------------------------
NULL_REPORTS = 100
# At a true rate of 5%, more than 10 of 100 reports happen with probability 0.011 (binomial).
ALLOWED_NULL_REPORTS = 10


@pytest.mark.slow  # 100 simulated reports with five arms each
def test_with_the_controls_in_and_no_true_difference_at_most_5_percent_of_reports_show_a_primary_effect() -> (
    None
):
    """The run-time layer's part joins the confirmatory set: Holm over the whole set keeps one error rate."""
    from reporting.units import Units

    grid = replace(
        QUICKSTART, layers=4, heads=6, arms=(BASELINE, protected(), protected("random"), MAIN, inert())
    )
    flagged, layer_rows = 0, 0
    for seed in range(NULL_REPORTS):
        stats = compute_statistics(build_design(build_records(grid, seed)), Units())
        confirmatory = [c for c in stats.comparisons if c.role == "primary"]
        layer_rows += sum(c.family == LAYER_FAMILY for c in confirmatory)
        flagged += any(c.significant(0.05) for c in confirmatory)
    assert layer_rows == NULL_REPORTS  # one run-time-layer comparison per report, in the confirmatory set
    print(
        f"\nA/A with protected controls: {flagged}/{NULL_REPORTS} reports with a significant primary effect"
    )
    assert flagged <= ALLOWED_NULL_REPORTS
