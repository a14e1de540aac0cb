"""What every section of ``summary.md`` writes alike: a comparison's row and effect, tables, the answer
sentence of a question. It knows no analysis; each analysis renders its own section with these."""

from __future__ import annotations

from record.catalogue import CATALOGUE, spec
from reporting.analyses.damage_by_temperature import DAMAGE_BY_TEMPERATURE
from reporting.comparison import QUALITY, Comparison, shown
from reporting.design import Cell
from reporting.format import MISSING, effect_text, floor_text, pval
from reporting.results import Statistics
from reporting.units import BASELINE_ARM

NO_DIFF = "no significant difference"


def comparison_row(c: Comparison, alpha: float) -> list[str]:
    """One comparison as a table row: where, metric, contrast, effect with interval, test and n, Holm p, reading."""
    named = (
        not (c.arm.agency and c.arm.main) or c.family == DAMAGE_BY_TEMPERATURE
    )  # damage rows: one per arm, each named
    where = c.series.label() + (f" / {c.arm.label}" if named else "")
    return [
        where,
        spec(c.metric).label,
        c.contrast,
        effect_of(c) + censored_text(c),
        unadjusted_of(c),
        f"{c.effect.test}, n = {c.effect.n} {c.units}",
        pval(c.p_holm),
        c.reading(alpha),
    ]


def censored_text(c: Comparison) -> str:
    """Where most compared samples are degenerate or failed, each set to the worst value: the ratio is then one of
    censored values, mostly ties, not a perplexity ratio, and the row says so."""
    if c.censored is None or c.censored < CENSORED:
        return ""
    return (
        f" ({c.censored:.0%} of the samples compared are degenerate or failed, each set to the worst value: a "
        "ratio of censored values, not a perplexity ratio)"
    )


CENSORED = (
    0.5  # from this share of degenerate or failed samples on, a row's ratio is mostly ties at the worst
)


HEADER = [
    "series",
    "metric",
    "contrast",
    "effect [CI at its Holm step's level]",
    "effect [95% CI, unadjusted]",
    "test, n",
    "Holm p",
    "reading",
]


SPEED_METRICS = frozenset(m.name for m in CATALOGUE if m.measured_per == "timing")


def speed_warning_lines(rows: list[Comparison], stats: Statistics) -> list[str]:
    """The speed A/A's warning, as its own line under every answer that has a speed comparison."""
    warning = stats.speed_warning
    if warning is None or not any(c.metric in SPEED_METRICS for c in rows):
        return []
    return [f"> **Warning:** {warning}.", ""]


def power_line(rows: list[Comparison]) -> str:
    """Whether the units at hand could reach significance at all: the line that separates inconclusive from no effect."""
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


def verdicts(rows: list[Comparison], alpha: float) -> str:
    """One clause per comparison: what it shows, effect first."""
    clauses = []
    for c in rows:
        reading = c.reading(alpha)
        clauses.append(f"{spec(c.metric).label} ({c.contrast}): {effect_of(c)}, {reading}")
    return "; ".join(clauses)


def confirmatory_rows(stats: Statistics) -> list[Comparison]:
    return [c for c in stats.comparisons if c.role == "primary"]


def primary_line(rows: list[Comparison], stats: Statistics) -> str:
    return (
        f"Primary: {len(rows)} comparisons here, Holm-adjusted together with all {len(confirmatory_rows(stats))} "
        f"primary comparisons of this report. {power_line(rows)}."
    )


def question_section(key: str, question: str, stats: Statistics, preface: str, answer) -> list[str]:
    rows = stats.family(key)
    lines = [f"## {key[1]}. {question}", "", preface, ""]
    if not rows:
        return lines + [answer(rows, stats), ""]
    lines.append(primary_line(rows, stats))
    lines.append("")
    lines += markdown_table(HEADER, [comparison_row(c, stats.alpha) for c in rows])
    return lines + [answer(rows, stats), "", *speed_warning_lines(rows, stats)]


def generic_answer(rows: list[Comparison], stats: Statistics, good: str, bad: str, nothing: str) -> str:
    """A question's answer in one sentence from its significant rows, or why it cannot say."""
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
            f"{stats.alpha:g} with these units). Effects: {verdicts(tested, stats.alpha)}."
        )
    return (
        f"**Answer:** {NO_DIFF} in any primary comparison; the intervals bound the effects: "
        f"{verdicts(tested, stats.alpha)}."
    )


def with_context(answer, stats: Statistics) -> str:
    """Q1 and Q4 answers say what the ablation and the recovery records add, when they are present."""
    notes = []
    ablation = [
        c
        for c in stats.family("ablation")
        if not (c.arm.agency and c.arm.main) and c.metric == "reference_perplexity"
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


def degenerate_rule(stats: Statistics) -> str:
    return (
        f"A sample is degenerate when its reference perplexity exceeds {stats.units.degenerate_perplexity:g} or "
        f"its repetition rate exceeds {stats.units.degenerate_repetition:g} (loops score a low perplexity); in "
        "every quality comparison it is the worst outcome (the largest diversity distance, the worst perplexity "
        "of the compared cells), so degenerate text is never a gain and two degenerate samples tie."
    )


def cell_of_comparison(c: Comparison, arm, series=None, stats: Statistics | None = None):
    """The cell a comparison's arm sits in at its level (its temperature, else the series' first)."""
    if c.level is None:
        raise ValueError(f"a {c.family} comparison ({c.contrast}) has no pruning level to find its cells by")
    series = series or c.series
    if c.temperature is not None:
        return Cell(series, c.temperature, c.level, arm)
    temperatures = sorted(
        {x.cell.temperature for x in (stats.cells if stats else []) if x.cell.series == series}
    )
    return Cell(series, temperatures[0] if temperatures else 0.0, c.level, arm)


def effect_of(c: Comparison | None) -> str:
    """An effect with its interval, as every table of the summary prints it."""
    if c is None:
        return MISSING
    low, high = c.interval()
    tested = (
        c.effect.p is not None
    )  # tested, yet no end: the test can reject no value, the interval is unbounded
    text = effect_text(c.kind, shown(c, c.effect.estimate), shown(c, low), shown(c, high), tested)
    return text + (confidence_text(c) if tested else "")


def confidence_text(c: Comparison) -> str:
    """The level of a shown interval where it is not 95% (a Holm step's), e.g. `` (99.2%)``."""
    level = c.holm_confidence
    return "" if level is None or abs(level - 0.95) < 1e-9 else f" ({100 * level:.4g}%)"


def unadjusted_of(c: Comparison) -> str:
    """The unadjusted 95% interval of a comparison whose shown interval is at its Holm step's level."""
    return effect_text(
        c.kind,
        shown(c, c.effect.estimate),
        shown(c, c.effect.ci_low),
        shown(c, c.effect.ci_high),
        c.effect.tested,
    )


def corpus_ratio_text(ratio: float, tolerance: float = 0.01) -> str:
    """A corpus perplexity ratio of an A/A check, and whether it is within the check's tolerance."""
    return f"×{ratio:.4f} ({'within' if abs(ratio - 1) <= tolerance else 'outside'} {tolerance:.0%})"


def aa_table(rows: list[tuple[Comparison, str, str]], where: str, alpha: float) -> list[str]:
    """An A/A check's table: per comparison, where it was made (``where`` names the column), its reference
    perplexity effect, its corpus perplexity ratio and its reading."""
    header = [
        "series",
        where,
        "arm",
        "reference perplexity ratio [95% CI]",
        "corpus perplexity ratio",
        "Holm p",
        "reading",
    ]
    table = [
        [c.series.label(), at, c.arm.label, effect_of(c), corpus, pval(c.p_holm), c.reading(alpha)]
        for c, at, corpus in rows
    ]
    return markdown_table(header, table)


def cell_text(c: Comparison | None, alpha: float) -> str:
    if c is None:
        return MISSING
    return f"{effect_of(c)}, Holm p {pval(c.p_holm)}: {c.reading(alpha)}{censored_text(c)}"


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows] + [""]


def primary_quality(stats: Statistics) -> list[Comparison]:
    return [c for c in stats.family("primary") if c.metric == QUALITY]


def agency_present(stats: Statistics) -> bool:
    return any(c.cell.arm.agency for c in stats.cells)


def level_effect(stats: Statistics, series, arm, at: float) -> Comparison | None:
    """The quality ratio of an arm against the baseline at one level, if computed: question 2's row for an arm
    that answers the questions, the dose family's for a variant."""
    return next(
        (
            c
            for c in stats.family("Q2") + stats.family("dose")
            if c.series == series
            and c.arm == arm
            and c.other == BASELINE_ARM
            and c.metric == QUALITY
            and c.level == at
        ),
        None,
    )


def positive_controls_text(stats: Statistics) -> str:
    return (
        "the only agency arms here force head states (positive controls: "
        f"{', '.join(stats.positive_controls)}), which answer no question"
    )


def no_primary_text(stats: Statistics) -> str:
    """Why the primary endpoint has no row: no pruned level with both arms, or only positive controls."""
    if stats.positive_controls:
        return f"not measured: {positive_controls_text(stats)}"
    return "not measured (no pruned level has both the baseline and an agency arm)"


def controls_only(stats: Statistics) -> bool:
    """Every agency arm forces head states: nothing answers a question, so nothing is attributed or timed."""
    return bool(stats.positive_controls) and not stats.family("primary")


def credited_elsewhere(rows: list[Comparison], alpha: float) -> list[str]:
    """Significant gains over the baseline that the attribution does not credit to the agency layer."""
    return [
        f"{spec(c.metric).label} {c.contrast} {effect_of(c)} (Holm p {pval(c.p_holm)}): {c.override}"
        for c in rows
        if c.significant(alpha) and c.better() and c.override is not None
    ]
