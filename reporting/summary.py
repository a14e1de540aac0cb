"""``summary.md``: the primary endpoint and the five questions answered from the statistics, effect sizes first.

Every sentence is derived from a number in ``statistics.json``. Every result is
labelled primary (one Holm adjustment over all of them: one error rate for the
whole report), secondary or exploratory. Each answer
leads with the effect and its 95% interval, then the test. Where a test could
not have reached significance with the units at hand, the text says
"inconclusive: too few prompts to detect an effect"; where it could and did
not, "no significant difference", with the interval that bounds the effect.
"""

from __future__ import annotations

from pathlib import Path

from record.catalogue import CATALOGUE, spec
from reporting.format import MISSING, floor_text, level, num, pval
from reporting.optimal import LevelChoice, ParetoFront
from reporting.questions import (
    CONFIRMATORY,
    CORPUS_FAMILY,
    DAMAGE_BY_TEMPERATURE,
    POSITIVE_CONTROL_FAMILY,
    PRIMARY_ENDPOINT,
    QUESTIONS,
    SPEED_AA_FAMILY,
    Comparison,
    speed_warning,
)
from reporting.statistics import FAMILIES, Statistics
from reporting.summary_attribution import (
    aa_table,
    attribution_section,
    corpus_ratio_text,
    credited_elsewhere,
    effect_of,
    headline,
    inert_aa_section,
    manipulation_section,
    markdown_table,
    no_primary_text,
    positive_controls_text,
    strategies_section,
)

NO_DIFF = "no significant difference"


def _row(c: Comparison, alpha: float) -> list[str]:
    named = (
        c.arm.label != "agency" or c.family == DAMAGE_BY_TEMPERATURE
    )  # damage rows: one per arm, each named
    where = c.series.label() + (f" / {c.arm.label}" if named else "")
    return [
        where,
        spec(c.metric).label,
        c.contrast,
        effect_of(c),
        f"{c.effect.test}, n = {c.effect.n} {c.units}",
        pval(c.p_holm),
        c.reading(alpha),
    ]


HEADER = ["series", "metric", "contrast", "effect [95% CI]", "test, n", "Holm p", "reading"]
SPEED_METRICS = frozenset(m.name for m in CATALOGUE if m.measured_per == "timing")


def _speed_warning(rows: list[Comparison], stats: Statistics) -> list[str]:
    """The speed A/A's warning, as its own line under every answer that has a speed comparison."""
    warning = speed_warning(stats.comparisons)
    if warning is None or not any(c.metric in SPEED_METRICS for c in rows):
        return []
    return [f"> **Warning:** {warning}.", ""]


def _power_line(rows: list[Comparison]) -> str:
    prompt_based = [c for c in rows if "prompt" in c.units and c.effect.p is not None]
    timing_based = [c for c in rows if "prompt" not in c.units and c.effect.p is not None]
    parts = []
    if prompt_based:
        n = min(c.effect.n for c in prompt_based)
        floor = min(c.p_floor_holm for c in prompt_based if c.p_floor_holm is not None)
        parts.append(
            f"n = {n} prompts; smallest attainable Holm-adjusted p of a prompt test = {floor_text(floor)}"
            + (
                " (below 0.05 is impossible: **inconclusive: too few prompts to detect an effect**)"
                if floor >= 0.05
                else ""
            )
        )
    if timing_based:
        units = sorted({c.units for c in timing_based})
        parts.append(
            f"speed: n = {min(c.effect.n for c in timing_based)} or more per test ({'; '.join(units)}; "
            "t-tests: no floor on p)"
        )
    return "; ".join(parts) if parts else "no test could be run"


def _verdicts(rows: list[Comparison], alpha: float) -> str:
    """One clause per comparison: what it shows, effect first."""
    clauses = []
    for c in rows:
        reading = c.reading(alpha)
        clauses.append(f"{spec(c.metric).label} ({c.contrast}): {effect_of(c)}, {reading}")
    return "; ".join(clauses)


def _confirmatory(stats: Statistics) -> list[Comparison]:
    return [c for c in stats.comparisons if c.family in CONFIRMATORY]


def _primary_line(rows: list[Comparison], stats: Statistics) -> str:
    return (
        f"Primary: {len(rows)} comparisons here, Holm-adjusted together with all {len(_confirmatory(stats))} "
        f"primary comparisons of this report. {_power_line(rows)}."
    )


def _question_section(key: str, stats: Statistics, preface: str, answer) -> list[str]:
    rows = stats.family(key)
    lines = [f"## {key[1]}. {QUESTIONS[key]}", "", preface, ""]
    if not rows:
        return lines + [answer(rows, stats), ""]
    lines.append(_primary_line(rows, stats))
    lines.append("")
    lines += markdown_table(HEADER, [_row(c, stats.alpha) for c in rows])
    return lines + [answer(rows, stats), "", *_speed_warning(rows, stats)]


def _generic_answer(rows: list[Comparison], stats: Statistics, good: str, bad: str, nothing: str) -> str:
    if not rows and stats.positive_controls and not stats.family("primary"):
        return f"**Answer:** not asked: {positive_controls_text(stats)}."
    if not rows:
        return f"**Answer:** {nothing}"
    tested = [c for c in rows if c.effect.p is not None]
    if not tested:
        return (
            "**Answer:** not answerable: no comparison could be tested ("
            + "; ".join(sorted({c.effect.note or "too few units" for c in rows}))
            + ")."
        )
    significant = [c for c in tested if c.significant(stats.alpha)]
    inconclusive = [c for c in tested if c.reading(stats.alpha).startswith("inconclusive")]
    if significant:
        better = [c for c in significant if c.better() and c.override is None]
        worse = [c for c in significant if not c.better()]
        parts = []
        not_credited = credited_elsewhere(significant, stats.alpha)  # the protected control explains these
        if not_credited:
            parts.append("the attribution does not credit the agency layer with: " + "; ".join(not_credited))
        if better:
            parts.append(
                f"{good}: "
                + "; ".join(
                    f"{spec(c.metric).label} {c.contrast} {effect_of(c)} (Holm p {pval(c.p_holm)})"
                    for c in better
                )
            )
        if worse:
            parts.append(
                f"{bad}: "
                + "; ".join(
                    f"{spec(c.metric).label} {c.contrast} {effect_of(c)} (Holm p {pval(c.p_holm)})"
                    for c in worse
                )
            )
        later = [part[0].upper() + part[1:] for part in parts[1:]]  # each starts a sentence
        return "**Answer:** " + ". ".join([parts[0], *later]) + "."
    if len(inconclusive) == len(tested):
        return (
            "**Answer: inconclusive: too few prompts to detect an effect** (no test could reach p < "
            f"{stats.alpha:g} with these units). Effects: {_verdicts(tested, stats.alpha)}."
        )
    return (
        f"**Answer:** {NO_DIFF} in any primary comparison; the intervals bound the effects: "
        f"{_verdicts(tested, stats.alpha)}."
    )


def _with_context(answer, stats: Statistics) -> str:
    """Q1 and Q4 answers say what the ablation and the recovery records add, when they are present."""
    notes = []
    ablation = [
        c for c in stats.family("ablation") if c.arm.label != "agency" and c.metric == "reference_perplexity"
    ]
    if ablation:
        parts = [f"{c.arm.label}: {effect_of(c)} ({c.reading(stats.alpha)})" for c in ablation]
        notes.append(
            "Taken apart (ablation, each variant against the whole agency arm, pruned levels pooled; "
            "above 1: the part switched off helps): " + "; ".join(parts) + "."
        )
    if stats.family("recovery"):
        notes.append(
            "Recovered models are answered as their own series (recovered=yes), beside the same "
            "conditions before recovery (recovered=no); see 'Recovery after pruning'."
        )
    return answer + ("\n\n" + " ".join(notes) if notes else "")


def _q1(stats: Statistics) -> list[str]:
    return _question_section(
        "Q1",
        stats,
        "How the agency/baseline ratio changes per 10 points of pruning over the pruned levels (below 1 for "
        "perplexity, above 1 for tokens/s: agency degrades less). Reference perplexity: the per-prompt slope of "
        "the log ratio, temperatures pooled; tokens/s: the mean log ratio of each timing session that timed the "
        "arms side by side, regressed on the level. At 0% the arms write the same text, so the step from 0% to the first pruned level is its own "
        "comparison (the effect at that level over at 0%), not part of the slope.",
        lambda rows, s: _with_context(
            _generic_answer(
                rows,
                s,
                "agency degrades less",
                "agency degrades more",
                "no series has both arms at two or more levels.",
            ),
            s,
        ),
    )


def _share_text(choice: LevelChoice) -> str:
    ranked = sorted(choice.shares.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{level(lv)} in {100 * share:.0f}%" for lv, share in ranked)


def _choice_line(choice: LevelChoice) -> str:
    """One arm's chosen level, its bootstrap, and each pruned level's ratios to the unpruned model."""
    where = f"{choice.series.label()} / {choice.arm.label}"
    if choice.chosen is None:
        return f"- {where}: not chosen ({choice.note})."
    endpoints = " and ".join(choice.endpoints)
    low, high = choice.interval or (None, None)
    text = (
        f"- {where}: highest level within ×{choice.margin:g} of unpruned ({endpoints}): "
        f"**{level(choice.chosen)}** (bootstrap over {choice.resamples} resamples: {_share_text(choice)}; "
        f"95% range {level(low)} to {level(high)})."
    )
    per_level = [
        f"{level(q.level)} ×{num(q.reference_ratio)}"
        + ("" if q.corpus_ratio is None else f" / ×{num(q.corpus_ratio)}")
        + ("" if q.within else " (outside)")
        for q in choice.levels
    ]
    unit = "reference" + ("" if len(choice.endpoints) == 1 else " / corpus") + " perplexity vs unpruned"
    text += f" Per level ({unit}): {', '.join(per_level)}."
    return text + (f" Note: {choice.note}." if choice.note else "")


def _front_line(front: ParetoFront) -> str:
    where = f"{front.series.label()} / {front.arm.label}"
    if not front.points:
        return f"- {where}: Pareto front not computed ({front.note})."
    points = ", ".join(
        f"{level(p.level)} ({num(p.tokens_per_second)} tokens/s, ×{num(p.reference_ratio)})"
        for p in front.points
        if p.on_front
    )
    return f"- {where}: Pareto levels {points}." + (f" Note: {front.note}." if front.note else "")


def _q2(stats: Statistics) -> list[str]:
    def answer(rows: list[Comparison], s: Statistics) -> str:
        lines = [
            f"**Answer:** per arm, the highest pruning level whose quality stays within ×{s.margin.ratio:g} of "
            "the unpruned model (the geometric mean over prompts of reference perplexity, and over evaluation "
            "windows of corpus perplexity, against the baseline at 0%; reached from 0% through levels that are "
            "all within), with a bootstrap of that choice (prompts and windows resampled, the choice made again):",
            "",
            *(_choice_line(c) for c in s.optimal),
        ]
        if not s.optimal:
            lines.append("- no series has a 0% level to compare with.")
        lines += [
            "",
            "Speed/quality Pareto front per arm (levels no other level beats in both tokens/s and reference "
            "perplexity ratio to unpruned; temperatures pooled):",
            "",
            *(_front_line(f) for f in s.fronts),
        ]
        if rows:
            lines += ["", "Agency vs baseline at each pruned level (the primary comparisons in the table):"]
            lines.append(
                _generic_answer(rows, s, "agency better", "agency worse", "").replace("**Answer:** ", "", 1)
            )
        return "\n".join(lines)

    return _question_section(
        "Q2",
        stats,
        "The optimal level is a trade-off, not the level where the arms differ most: how far each arm can be "
        "pruned before its quality leaves a declared margin of the unpruned model, and which levels buy speed "
        "without a worse quality. The table holds agency/baseline at each pruned level (geometric mean over "
        "prompts for reference perplexity, over timing sessions for tokens/s), temperatures pooled.",
        answer,
    )


def _corpus(stats: Statistics) -> list[str]:
    rows = stats.family(CORPUS_FAMILY)
    if not rows:
        return []
    lines = ["## Corpus perplexity, paired by evaluation window (secondary)", ""]
    lines.append(
        "Every arm scores the same windows of the held-out text (one tokenizer, one window and stride), so each "
        "window is a paired unit: per window, the log ratio agency/baseline of its perplexity (its mean NLL), a "
        "sign-flip test and a bootstrap-t interval of the mean; Holm within these rows. Teacher-forced text "
        "has no loops or degenerate samples. Records without per-window values are not tested."
    )
    lines.append("")
    lines += markdown_table(HEADER, [_row(c, stats.alpha) for c in rows])
    return lines


def _q3(stats: Statistics) -> list[str]:
    def answer(rows: list[Comparison], s: Statistics) -> str:
        if not rows:
            temps = sorted({c.cell.temperature for c in s.cells})
            return (
                "**Answer:** only one temperature was run, so the agency effect cannot be compared across "
                f"temperatures (T = {', '.join(f'{t:g}' for t in temps) or MISSING})."
            )
        return _generic_answer(
            rows,
            s,
            "the agency effect on perplexity is more favourable at the higher temperature",
            "the agency effect on perplexity is less favourable at the higher temperature",
            "",
        )

    return _question_section(
        "Q3",
        stats,
        "Per prompt, the agency/baseline perplexity ratio at one temperature divided by that at the next "
        "(a difference of differences on the log scale, paired over prompts): whether temperature changes the "
        "agency effect. How temperature changes the damage pruning does to each arm follows the answer.",
        lambda rows, s: answer(rows, s) + _damage(s),
    )


def _damage(stats: Statistics) -> str:
    """The secondary half of question 3: per arm, pruning's damage at one temperature over the next."""
    rows = stats.family(DAMAGE_BY_TEMPERATURE)
    if not rows:
        return ""
    lines = [
        "",
        "",
        "Secondary (not an agency claim; Holm within these rows): the damage pruning does to each arm, the "
        "per-prompt log ratio of reference perplexity pruned over unpruned at one temperature divided by that "
        "at the next, averaged over the pruned levels (above 1: pruning costs more at the higher temperature).",
        "",
    ]
    lines += markdown_table(HEADER, [_row(c, stats.alpha) for c in rows])
    return "\n".join(lines).rstrip("\n")


def _q4(stats: Statistics) -> list[str]:
    return _question_section(
        "Q4",
        stats,
        "The agency effect at the highest pruned level over the effect at the lowest pruned level (a ratio of "
        "ratios; below 1 for perplexity and above 1 for tokens/s: agency helps more when more is pruned). Not "
        "over 0%, where the arms write the same text: that would restate the effect at the highest level.",
        lambda rows, s: _with_context(
            _generic_answer(
                rows,
                s,
                "agency helps more at the highest level",
                "agency helps less at the highest level",
                "fewer than two levels were run.",
            ),
            s,
        ),
    )


def _q5(stats: Statistics) -> list[str]:
    lines = _question_section(
        "Q5",
        stats,
        "For each quality measure, the agency effect averaged over the pruned levels. Diversity measures are "
        "judged by their distance to the unpruned model's value on the same prompt (negative: agency stays "
        f"closer). {_degenerate_rule(stats)} Ranked by the standardised gain (mean / sd over prompts, + = agency "
        "better).",
        lambda rows, s: "" if rows else _generic_answer(rows, s, "", "", "no pruned level has both arms."),
    )
    rows = stats.family("Q5")
    if not rows:
        return lines
    ranked = sorted(rows, key=lambda c: -(c.standardized[0] if c.standardized else float("-inf")))
    table = [
        [
            c.series.label(),
            spec(c.metric).label,
            MISSING
            if not c.standardized
            else f"{c.standardized[0]:+.2f} [{c.standardized[1]:+.2f}, {c.standardized[2]:+.2f}]",
            c.reading(stats.alpha),
        ]
        for c in ranked
    ]
    lines += ["Ranking by standardised gain:", ""]
    lines += markdown_table(["series", "metric", "standardised gain [95% CI]", "reading"], table)
    significant = [c for c in ranked if c.significant(stats.alpha) and c.better() and c.override is None]
    if significant:
        answer = (
            "**Answer:** benefit most, in order: "
            + ", ".join(
                f"{spec(c.metric).label} ({effect_of(c)}, standardised gain {c.standardized[0]:+.2f}, Holm p "
                f"{pval(c.p_holm)})"
                for c in significant
                if c.standardized
            )
            + "."
        )
    else:
        answer = _generic_answer(rows, stats, "agency better", "agency worse", "")
        answer = (
            answer.replace(
                "**Answer:**", "**Answer:** no quality measure shows a significant agency gain;", 1
            )
            if not answer.startswith("**Answer: inconclusive")
            else answer
        )
    return lines + [answer, ""]


def _degenerate_rule(stats: Statistics) -> str:
    return (
        f"A sample is degenerate when its reference perplexity exceeds {stats.units.degenerate_perplexity:g} or "
        f"its repetition rate exceeds {stats.units.degenerate_repetition:g} (loops score a low perplexity); in "
        "every quality comparison it is the worst outcome (the largest diversity distance, the worst perplexity "
        "of the compared cells), so degenerate text is never a gain and two degenerate samples tie."
    )


def _primary(stats: Statistics) -> list[str]:
    rows = stats.family("primary")
    lines = ["## Primary endpoint", "", f"Declared before any data: {PRIMARY_ENDPOINT}.", ""]
    if not rows:
        return lines + [f"**Answer:** the primary endpoint was {no_primary_text(stats)}.", ""]
    lines.append(_primary_line(rows, stats))
    lines.append("")
    lines += markdown_table(HEADER, [_row(c, stats.alpha) for c in rows])
    return lines + [
        _generic_answer(rows, stats, "agency better", "agency worse", ""),
        "",
        *_speed_warning(rows, stats),
    ]


def _aa(stats: Statistics) -> list[str]:
    rows = stats.family("aa")
    lines = ["## A/A check: the agency arm with nothing pruned (secondary)", ""]
    if not rows:
        return lines + [
            (
                "No agency arm with its own head states was run at 0% (an arm whose states are forced by "
                "head_overrides is a positive control, not an A/A), so the agency arm was not checked against "
                "the baseline with nothing pruned."
                if positive_rows(stats)
                else "No 0% level with both arms was run, so the agency arm was not checked against the "
                "baseline with nothing pruned."
            ),
            "",
            *positive_control_lines(stats),
            *speed_aa_lines(stats),
        ]
    lines.append(
        "With nothing pruned and no head stressed, the agency arm should write what the baseline writes: "
        f"{FAMILIES['aa']}."
    )
    lines.append("")
    table = []
    for c in rows:
        base = stats.cell(_cell(c, c.other))
        agency = stats.cell(_cell(c, c.arm))
        corpus = "—"
        if base and agency and "corpus_perplexity" in base.metrics and "corpus_perplexity" in agency.metrics:
            b, a = base.metrics["corpus_perplexity"].mean, agency.metrics["corpus_perplexity"].mean
            if a is not None and b is not None:
                corpus = corpus_ratio_text(a / b)
        table.append((c, f"{c.temperature:g}", corpus))
    lines += aa_table(table, "T", stats.alpha)
    return lines + positive_control_lines(stats) + speed_aa_lines(stats)


def positive_rows(stats: Statistics) -> list[Comparison]:
    return stats.family(POSITIVE_CONTROL_FAMILY)


def positive_control_lines(stats: Statistics) -> list[str]:
    """The positive control beside the A/A: forced head states must show an effect at every level."""
    lines = []
    for c in positive_rows(stats):
        if c.effect.p is None:
            verdict = f"not tested ({c.effect.note or 'too few units'})"
        elif c.significant(stats.alpha):
            verdict = "detected: the state path and the report can see an effect"
        else:
            verdict = (
                "NOT detected: the forced states changed nothing the report could see; suspect the state path"
            )
        where = "nothing pruned" if c.level == 0 else f"{c.level:g}% pruned"
        lines.append(
            f"Positive control ({c.series.label()} / {c.arm.label}, T={c.temperature:g}, head states forced by "
            f"head_overrides, {where}): reference perplexity {effect_of(c)}, Holm p "
            f"{pval(c.p_holm)} within its family: {verdict}."
        )
    return lines + [""] if lines else []


def speed_aa_lines(stats: Statistics) -> list[str]:
    """The speed A/A beside the quality A/A: the baseline timed against itself, per record that holds one."""
    rows = stats.family(SPEED_AA_FAMILY)
    if not rows:
        return [
            "Speed A/A: absent (no record holds one: a local sweep times one cell's baseline against itself; "
            "records of conditions run alone, by W&B agents or before it was timed have none), so the speed "
            "answers have no check of the timing's own noise.",
            "",
        ]
    lines = []
    for c in rows:
        lines.append(
            f"Speed A/A ({c.series.label()}, T={c.temperature:g}, {c.level:g}%): baseline vs itself tokens/s "
            f"{effect_of(c)} over {c.effect.n} sessions ({c.effect.test}): {c.reading(stats.alpha)}."
        )
    return lines + [""]


def _ablation(stats: Statistics) -> list[str]:
    rows = stats.family("ablation")
    if not rows:
        return []
    lines = ["## The agency effect taken apart (components and sham control; secondary)", ""]
    lines.append(
        "Averaged over the pruned levels and temperatures, per prompt. The first row (when the default agency "
        "arm ran) is the whole agency effect; each other row compares an agency arm with one part switched "
        "off with the whole agency arm (a perplexity ratio above 1 means that part helps), or the sham "
        "control with its real arm (the same settings without the sham), whose states and factors it "
        "replays on other kept heads: a sham equal to its real arm means the effect does not depend on "
        "which heads the states pick, when the states acted."
    )
    lines.append("")
    lines += markdown_table(HEADER, [_row(c, stats.alpha) for c in rows])
    return lines


def _recovery(stats: Statistics) -> list[str]:
    rows = stats.family("recovery")
    if not rows:
        return []
    lines = ["## Recovery after pruning (secondary)", ""]
    lines.append(
        "Each recovered model (a short distillation of the unpruned model into the pruned arm, on the "
        "calibration text) against the same condition before recovery: the ratio of reference perplexity "
        "(below 1: recovery helped), and the share of the log perplexity lost to pruning (against the "
        "unpruned arm) that recovery regains, with bootstrap intervals over prompts. Holm within this "
        "family."
    )
    lines.append("")
    table = []
    for c in rows:
        before = stats.cell(_cell(c, c.arm, c.series.before_recovery(), stats))
        after = stats.cell(_cell(c, c.arm, c.series, stats))
        corpus = MISSING
        if (
            before
            and after
            and "corpus_perplexity" in before.metrics
            and "corpus_perplexity" in after.metrics
        ):
            corpus = f"{num(before.metrics['corpus_perplexity'].mean)} → {num(after.metrics['corpus_perplexity'].mean)}"
        share = (
            MISSING
            if c.regained is None
            else f"{100 * c.regained[0]:.0f}% [{100 * c.regained[1]:.0f}%, {100 * c.regained[2]:.0f}%]"
        )
        table.append(
            [
                c.series.before_recovery().label().replace(" / recovered=no", ""),
                c.arm.label,
                level(c.level),
                effect_of(c),
                share,
                corpus,
                pval(c.p_holm),
                c.reading(stats.alpha),
            ]
        )
    lines += markdown_table(
        [
            "series",
            "arm",
            "level",
            "reference perplexity, recovered / before [95% CI]",
            "pruning loss regained [95% CI]",
            "corpus perplexity before → after",
            "Holm p",
            "reading",
        ],
        table,
    )
    return lines


def _cell(c: Comparison, arm, series=None, stats: Statistics | None = None):
    from reporting.design import Cell

    if c.level is None:
        raise ValueError(f"a {c.family} comparison ({c.contrast}) has no pruning level to find its cells by")
    series = series or c.series
    if c.temperature is not None:
        return Cell(series, c.temperature, c.level, arm)
    temperatures = sorted(
        {x.cell.temperature for x in (stats.cells if stats else []) if x.cell.series == series}
    )
    return Cell(series, temperatures[0] if temperatures else 0.0, c.level, arm)


def _behaviour(stats: Statistics) -> list[str]:
    lines = ["## Agency layer behaviour", ""]
    cells = [(c, c.agency) for c in stats.cells if c.agency is not None]
    if not cells:
        return lines + ["No agency records were loaded.", ""]
    table = []
    for c, a in cells:
        states = ", ".join(f"{k} {v:.1f}" for k, v in a.state_counts_mean.items() if v)
        table.append(
            [
                c.cell.series.label(),
                f"{c.cell.temperature:g}",
                level(c.cell.level),
                c.cell.arm.label,
                states or MISSING,
                f"{a.overloaded_entries:.1f}",
                str(a.misaligned),
                f"{a.withholding_consent:g}",
                ", ".join(f"{k}: {v}" for k, v in a.violations.items() if v) or "none",
            ]
        )
    lines += markdown_table(
        [
            "series",
            "T",
            "level",
            "arm",
            "heads per state (mean over steps)",
            "overload entries per record",
            "misaligned heads",
            "withholding prune consent",
            "violations",
        ],
        table,
    )
    return lines


def _cell_table(stats: Statistics) -> list[str]:
    names = [m.name for m in CATALOGUE if "table" in m.views]
    present = [n for n in names if any(n in c.metrics for c in stats.cells)]
    lines = [
        "## Cell means with 95% intervals",
        "",
        "Natural units: geometric means for perplexity and speed; intervals over prompts (samples), timing "
        "sessions (speed: each session's mean of its repeats) or records (corpus perplexity); '(n=1)': one value, no interval. Degenerate: samples "
        f"with reference perplexity above {stats.units.degenerate_perplexity:g} or repetition rate above "
        f"{stats.units.degenerate_repetition:g}.",
        "",
    ]
    rows = []
    for c in stats.cells:
        row = [c.cell.series.label(), f"{c.cell.temperature:g}", level(c.cell.level), c.cell.arm.label]
        for name in present:
            d = c.metrics.get(name)
            if d is None or d.mean is None:
                row.append(MISSING)
            elif d.ci_low is None:
                row.append(f"{num(d.mean)} (n={d.n})")
            else:
                row.append(f"{num(d.mean)} [{num(d.ci_low, 3)}, {num(d.ci_high, 3)}]")
        flagged, total = c.degenerate
        row.append(f"{flagged}/{total}")
        rows.append(row)
    return lines + markdown_table(
        ["series", "T", "level", "arm", *(spec(n).label for n in present), "degenerate"], rows
    )


def _exploratory(stats: Statistics) -> list[str]:
    rows = stats.family("exploratory")
    lines = ["## Exploratory comparisons", ""]
    significant = [c for c in rows if c.significant(stats.alpha)]
    lines.append(
        f"{len(rows)} comparisons (every agency arm vs the baseline at every level and temperature, every "
        f"tested metric), Holm-adjusted within this exploratory family, separately from the questions. "
        f"{len(significant)} significant" + (":" if significant else ".")
    )
    lines.append("")
    if significant:
        lines += markdown_table(
            ["series", "T", "level", "metric", "contrast", "effect [95% CI]", "Holm p", "reading"],
            [
                [
                    c.series.label(),
                    f"{c.temperature:g}",
                    level(c.level),
                    spec(c.metric).label,
                    c.contrast,
                    effect_of(c),
                    pval(c.p_holm),
                    c.reading(stats.alpha),
                ]
                for c in significant
            ],
        )
    return lines


def _warned_headline(stats: Statistics) -> list[str]:
    """The headline, its speed cost line carrying the speed A/A's warning when that is outside noise."""
    warning = speed_warning(stats.comparisons)
    lines = headline(stats)
    if warning is None:
        return lines
    return [
        f"{line} **Warning:** {warning}." if line.startswith("- **Speed cost:**") else line for line in lines
    ]


def render_summary(
    stats: Statistics, n_records: int, problems: list[str], skipped: list[str] | None = None
) -> str:
    """The whole ``summary.md`` as one string."""
    series = sorted({c.cell.series.label() for c in stats.cells})
    lines = ["# Pruning comparison with agency: summary", "", *_warned_headline(stats)]
    lines.append(
        f"{n_records} records in {len(stats.cells)} cells ({'; '.join(series) or 'none'}). Each answer gives the "
        "effect first: a ratio agency/baseline (geometric mean over prompts or timing sessions) with its 95% "
        "interval (bootstrap-t over prompts; t over timing sessions), then the test of that same mean (sign-flip "
        "permutation over prompts, whose iterations and seeds are averaged first; t-tests over timing sessions, "
        "each the mean paired log ratio of its repeats; each speed row's n counts its sessions). "
        "One error rate per report: the primary endpoint, every question's primary comparisons and the run-time "
        "layer's part of the attribution "
        f"({len(_confirmatory(stats))} in all) are Holm-adjusted together; secondary results (labelled) are adjusted within their "
        f"own family, exploratory ones within theirs; alpha = {stats.alpha:g}."
    )
    lines.append("")
    lines += [f"> Note: {note}" for note in stats.notes]
    if stats.notes:
        lines.append("")
    for section in (
        attribution_section,
        _primary,
        _q1,
        _q2,
        _q3,
        _q4,
        _q5,
        _corpus,
        strategies_section,
        _aa,
        inert_aa_section,
        _ablation,
        _recovery,
        _behaviour,
        manipulation_section,
        _cell_table,
        _exploratory,
    ):
        lines += section(stats)
    lines += ["## Problems with the inputs", ""]
    lines += [f"- {p}" for p in problems] or ["None: every record file was read and used."]
    if skipped:
        lines += ["", "## Figures not drawn", "", *(f"- {note}" for note in skipped)]
    return "\n".join(lines) + "\n"


def write_summary(
    stats: Statistics, n_records: int, problems: list[str], path: Path, skipped: list[str] | None = None
) -> Path:
    path.write_text(render_summary(stats, n_records, problems, skipped), encoding="utf-8")
    return path
