"""summary.md: what each answer may say, given what its tests could show."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
from session_timings import with_speed_aa
from synthetic import QUICKSTART, at_pruned_levels, build_records, growing

from reporting.analyses.q5_quality_metrics import _standardized
from reporting.design import build_design
from reporting.sections import comparison_row
from reporting.statistics import compute_statistics
from reporting.summary import render_summary

# The quickstart's timing layout: 3 sessions per cell spread over the sweep, 2 counterbalanced rounds each.
GRID = replace(QUICKSTART, layers=4, heads=6, sessions=3, repeats=2)
SWEPT = {"model.pruning.level", "model.agency.enabled", "model.generation.temperature"}
INCONCLUSIVE = "inconclusive: too few prompts to detect an effect"
END = r"[\d.e+-]+|[+-]?∞"  # an end the test never rejects (too few prompts) is unbounded
EFFECT = rf"[×][\d.e+-]+ \[({END}), ({END})\]|[+-][\d.e+-]+ \[({END}), ({END})\]"


def _summary(grid=GRID, seed: int = 0) -> tuple[str, object]:
    stats = compute_statistics(build_design(build_records(grid, seed=seed), SWEPT))
    return render_summary(stats, len(build_records(grid, seed=seed)), []), stats


def _sections(text: str) -> dict[str, str]:
    parts = re.split(r"^## ", text, flags=re.M)
    return {f"Q{p[0]}": p for p in parts if p[:1] in "12345"}


def _answer(section: str) -> str:
    (line,) = [x for x in section.splitlines() if x.startswith("**Answer")]
    return line


@pytest.fixture(scope="module")
def aa():
    return _summary()


@pytest.fixture(scope="module")
def four_prompts():
    return _summary(replace(GRID, prompts=4))


@pytest.fixture(scope="module")
def clear_gain():
    return _summary(GRID.with_effects(ppl=at_pruned_levels(0.5), speed=at_pruned_levels(1.2)))


def test_four_prompts_are_inconclusive_not_no_difference(four_prompts) -> None:
    text, stats = four_prompts
    sections = _sections(text)
    # the exact floor 2 / 2**4 = 0.125 times the 21 primary comparisons of the report, capped at 1
    assert len([c for c in stats.comparisons if c.role == "primary"]) == 21
    for q in ("Q1", "Q2", "Q3", "Q4", "Q5"):
        assert (
            "n = 4 prompts; smallest attainable Holm-adjusted p of a prompt test = 1 (below 0.05 is "
            f"impossible: **{INCONCLUSIVE}**)"
        ) in sections[q]
    for q in ("Q3", "Q5"):  # every test of these questions is over prompts
        assert _answer(sections[q]).startswith(f"**Answer: {INCONCLUSIVE}**")
    for c in stats.comparisons:
        if c.family in sections and c.units == "prompts":
            assert c.reading(stats.alpha) == INCONCLUSIVE
            assert c.p_floor_holm >= 0.05


def test_enough_prompts_without_an_effect_say_no_significant_difference(aa) -> None:
    text, stats = aa
    sections = _sections(text)
    # the Monte-Carlo sign-flip floor 1 / 10000 times the 21 primary comparisons of the report
    assert "n = 24 prompts; smallest attainable Holm-adjusted p of a prompt test = 0.0021" in sections["Q1"]
    assert INCONCLUSIVE not in "".join(sections.values())
    for q in ("Q1", "Q3", "Q4"):
        assert _answer(sections[q]).startswith(
            "**Answer:** no significant difference in any primary comparison"
        )
    assert _answer(sections["Q5"]).startswith(
        "**Answer:** no quality measure shows a significant agency gain"
    )


def test_every_answer_leads_with_an_effect_and_its_interval(aa, four_prompts, clear_gain) -> None:
    """Question 2 is answered with a level and the bootstrap of that choice, its comparisons after."""
    for text, stats in (aa, four_prompts, clear_gain):
        for q, section in _sections(text).items():
            answer = _answer(section) if q != "Q2" else section.split("**Answer:**", 1)[1]
            assert re.search(EFFECT, answer), (q, answer)
            if q == "Q2":
                assert re.search(r"\*\*\d+%\*\* \(bootstrap over 2000 resamples: \d+% in \d+%", answer)
            for c in stats.family(q):
                if c.significant(stats.alpha):
                    assert "Holm p" in answer


def test_every_question_shows_its_units_and_its_table(aa) -> None:
    text, stats = aa
    for q, section in _sections(text).items():
        rows = [line for line in section.splitlines() if line.startswith("| embedded")]
        assert (
            len(rows) >= len(stats.family(q))
            and f"Primary: {len(stats.family(q))} comparisons here, Holm-adjusted together with all 21"
            in section
        )
        assert "n = 24 prompts" in section
    # per pruned level: 3 passes, each the mean over 2 temperatures of its session's paired log ratio (2 rounds)
    assert "speed: n = 3 or more per test (timing passes timed side by side" in _sections(text)["Q2"]
    speed_rows = [line for line in _sections(text)["Q2"].splitlines() if "| tokens/s |" in line]
    assert speed_rows and all("n = 3 timing passes timed side by side" in line for line in speed_rows)


def test_significant_gains_name_the_level_and_the_metrics(clear_gain) -> None:
    text, _ = clear_gain
    sections = _sections(text)
    q2 = sections["Q2"].split("**Answer:**", 1)[1]
    assert "largest significant" not in q2  # the level where the arms differ most is not the optimal one
    assert re.search(
        r"agency better: .*reference perplexity agency/baseline at \d+% ×", q2.split("pruned level")[-1]
    )
    assert re.search(r"tokens/s agency/baseline at \d+%", q2)
    q5 = _answer(sections["Q5"])
    assert q5.startswith("**Answer:** benefit most, in order: reference perplexity (×")
    assert "standardised gain +" in q5


def test_one_temperature_cannot_answer_question_3() -> None:
    text, _ = _summary(replace(GRID, temperatures=(0.7,)))
    assert _answer(_sections(text)["Q3"]) == (
        "**Answer:** only one temperature was run, so the agency effect "
        "cannot be compared across temperatures (T = 0.7)."
    )


def test_arms_timed_alone_get_a_note_and_no_speed_claim_from_repeats() -> None:
    """Timed alone, the repeats of a run share its drift: the runs are the units, and with one run per arm and
    temperature no A/A speed difference is called significant; the ratio-based speed tests need pairs."""
    alone = replace(GRID, schedule="alone", sessions=None, repeats=5)  # one run per record
    for seed in range(5):
        text, stats = _summary(alone, seed)
        assert "> Note: some conditions were timed alone" in text
        speed = [c for q in ("Q1", "Q2", "Q4") for c in stats.family(q) if c.metric == "tokens_per_second"]
        assert not any(c.significant(stats.alpha) for c in speed)
        q2 = [c for c in stats.family("Q2") if c.metric == "tokens_per_second"]
        assert all(c.units == "timed runs (arms timed apart: unpaired)" and c.effect.n == 2 for c in q2)
        (q4,) = [c for c in stats.family("Q4") if c.metric == "tokens_per_second"]
        assert q4.reading(stats.alpha).startswith("not tested")
        assert not [c for c in stats.family("exploratory") if c.metric == "tokens_per_second"]


def test_an_answer_with_gains_and_losses_starts_each_sentence_with_a_capital() -> None:
    text, _ = _summary(
        GRID.with_effects(ppl=growing(0.1), speed=growing(0.8))
    )  # the ratios change with the level
    q1 = _answer(_sections(text)["Q1"])
    assert "agency better" not in q1 and re.search(r"\)\. [A-Z]", q1), q1  # two verdicts, two sentences
    for answer in (_answer(section) for section in _sections(text).values()):
        assert not re.search(r"\)\. [a-z]", answer), answer


def test_the_primary_endpoint_comes_first_and_every_other_result_says_what_it_is(aa) -> None:
    text, stats = aa
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings[0] == "## Headline" and headings[1].startswith("## Where the effect comes from")
    assert headings[2] == "## Primary endpoint" and headings[3].startswith("## 1.")
    assert "## A/A check: the agency arm with nothing pruned (secondary)" in headings
    assert "## Exploratory comparisons" in headings
    primary = text.split("## Primary endpoint")[1].split("## 1.")[0]
    assert primary.count("| embedded") == 2 and "(primary endpoint)" in primary
    q3 = _sections(text)["Q3"]
    assert "Secondary (not an agency claim" in q3 and "| embedded / entropy_low / baseline |" in q3
    assert "| embedded / entropy_low / agency |" in q3
    assert "repetition rate exceeds 0.5" in _sections(text)["Q5"]
    assert (
        f"({len([c for c in stats.comparisons if c.role == 'primary'])} in all) are Holm-adjusted together"
        in text
    )


# -- the speed A/A ---------------------------------------------------------------------------------------------
def _with_aa(factors: list[float], seed: int = 0) -> tuple[str, object]:
    records = build_records(GRID, seed=seed)
    (baseline,) = [
        r
        for r in records
        if r.config["model"]["pruning"]["level"] == 30
        and r.config["model"]["generation"]["temperature"] == 0.7
        and not r.config["model"]["agency"]["enabled"]
    ]
    with_speed_aa(baseline, factors)
    stats = compute_statistics(build_design(records, SWEPT))
    return render_summary(stats, len(records), []), stats


def _aa_section(text: str) -> str:
    return text.split("## A/A check")[1].split("\n## ")[0]


def test_the_speed_aa_is_shown_beside_the_quality_aa_with_its_interval_and_sessions() -> None:
    text, stats = _with_aa([1.004, 0.998, 1.001])
    (row,) = stats.family("speed-aa")
    assert row.effect.n == 3 and row.arm == row.other and row.level == 30.0 and row.role == "secondary"
    section = _aa_section(text)
    line = next(x for x in section.splitlines() if x.startswith("Speed A/A"))
    assert "baseline vs itself tokens/s ×1" in line and "over 3 sessions" in line
    assert re.search(EFFECT, line) and "no significant difference" in line
    assert "Warning" not in text and not any("speed A/A outside noise" in n for n in stats.notes)


def test_records_without_a_speed_aa_say_it_is_absent(aa) -> None:
    text, stats = aa
    assert not stats.family("speed-aa")
    assert "Speed A/A: absent" in _aa_section(text)


def test_a_speed_aa_outside_noise_puts_a_warning_on_every_speed_answer() -> None:
    text, stats = _with_aa([1.08, 1.1, 1.09])  # the same arm ~9% faster than itself, consistently
    (row,) = stats.family("speed-aa")
    assert row.effect.ci_low > 0 and row.reading(stats.alpha).startswith("outside noise")
    warning = "**Warning:** speed A/A outside noise"
    sections = _sections(text)
    for q in ("Q1", "Q2", "Q4"):  # every question with a speed comparison
        assert warning in sections[q], q
    for q in ("Q3", "Q5"):  # quality only
        assert warning not in sections[q], q
    primary = text.split("## Primary endpoint")[1].split("## 1.")[0]
    headline = text.split("## Headline")[1].split("\n## ")[0]
    speed_cost = next(x for x in headline.splitlines() if x.startswith("- **Speed cost:**"))
    assert warning in primary and warning in speed_cost
    assert "over 3 sessions" in text.split(warning)[1].split("\n")[0]
    assert any(n.startswith("speed A/A outside noise") for n in stats.notes)


def test_a_ratio_of_mostly_degenerate_samples_says_it_is_not_a_perplexity_ratio() -> None:
    """At 70% most samples of both arms are degenerate (tied at the worst value): that row's ratio is one of
    censored values, and its row says so; the 30% row, of ordinary text, does not."""
    _, stats = _summary()
    q2 = {c.level: c for c in stats.family("Q2") if c.metric == "reference_perplexity"}
    assert q2[70.0].censored > 0.5 > q2[30.0].censored
    assert (
        "not a perplexity ratio" in comparison_row(q2[70.0], stats.alpha)[3]
    )  # beside the effect it qualifies
    assert "not a perplexity ratio" not in comparison_row(q2[30.0], stats.alpha)[3]


def test_a_standardised_effect_of_mostly_tied_prompts_is_never_blown_up() -> None:
    """20 tied prompts and 4 gains: resamples of ties alone have no SD; they read 1e11 when floored."""
    values = np.array([0.0] * 20 + [0.1, 0.2, 0.3, 0.4])
    result = _standardized(values, "ties")
    assert result is None or all(abs(v) < 10 for v in result)
    some = np.array([0.0] * 8 + list(np.linspace(-0.2, 0.5, 16)))
    estimate, low, high = _standardized(some, "some ties")
    assert low < estimate < high and abs(low) < 10 and abs(high) < 10
