"""The summary's headline and its attribution sections: where the effect comes from, strategies, the manipulation
check and the A/A at every pruned level, each derived from a number in the statistics.

The headline (at most ``HEADLINE_LINES`` lines) says the primary answer, where it comes
from (or that it is not attributed and which sweep would attribute it), its speed cost,
the A/A checks and what limits it (prompts, timing layout), before any section.
"""

from __future__ import annotations

import math

from scipy.stats import spearmanr

from record.catalogue import spec
from reporting.attribution import (
    ATTRIBUTION_SWEEP,
    PRUNING_CHOICE,
    RUN_TIME_LAYER,
    SHAM_TOLERANCE,
    Attribution,
    Dose,
    dose_of,
    sham_verdict,
)
from reporting.format import MISSING, effect_text, floor_text, level, pval
from reporting.questions import (
    ATTRIBUTION_FAMILY,
    INERT_AA_FAMILY,
    LAYER_FAMILY,
    POSITIVE_CONTROL_FAMILY,
    PROTECTION_FAMILY,
    QUALITY,
    SPEED,
    SPEED_AA_FAMILY,
    STRATEGY_FAMILY,
    Comparison,
    shown,
)
from reporting.statistics import Statistics
from reporting.units import BASELINE_ARM

HEADLINE_LINES = 10
CORPUS = "corpus_perplexity"


def effect_of(c: Comparison | None) -> str:
    """An effect with its interval, as every table of the summary prints it."""
    if c is None:
        return MISSING
    return effect_text(
        c.kind, shown(c, c.effect.estimate), shown(c, c.effect.ci_low), shown(c, c.effect.ci_high)
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


def _cell_text(c: Comparison | None, alpha: float) -> str:
    return MISSING if c is None else f"{effect_of(c)}, Holm p {pval(c.p_holm)}: {c.reading(alpha)}"


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows] + [""]


def _primary_quality(stats: Statistics) -> list[Comparison]:
    return [c for c in stats.family("primary") if c.metric == QUALITY]


def _agency_present(stats: Statistics) -> bool:
    return any(c.cell.arm.agency for c in stats.cells)


def not_attributed_text() -> str:
    return (
        "**not attributed**: no baseline protecting the heads the agency arm protects (model.pruning.protect="
        "gradient) was run, so the effect cannot be split into the pruning choice and the run-time layer; "
        f"`{ATTRIBUTION_SWEEP}` runs that control"
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


def _controls_only(stats: Statistics) -> bool:
    """Every agency arm forces head states: nothing answers a question, so nothing is attributed or timed."""
    return bool(stats.positive_controls) and not stats.family("primary")


def _where_line(stats: Statistics) -> str:
    if _controls_only(stats):
        return "nothing to attribute: the agency arms here are positive controls"
    if stats.attributions:
        return "; ".join(
            f"{a.series.label()} / {a.arm.label}: {a.sentence} (pruning choice {effect_of(a.choice)}, run-time "
            f"layer {effect_of(a.layer)})"
            for a in stats.attributions
        )
    return not_attributed_text()


def _aa_line(stats: Statistics) -> str:
    parts = []
    for family, what in (("aa", "0%"), (INERT_AA_FAMILY, "inert agency arm at the pruned levels")):
        rows = [c for c in stats.family(family) if c.effect.p is not None]
        if rows:
            flagged = sum(c.significant(stats.alpha) for c in rows)
            parts.append(f"{what}: {len(rows) - flagged} of {len(rows)} rows with no significant difference")
    if not stats.family(INERT_AA_FAMILY):
        parts.append("no inert agency arm was run, so the pruned levels have no A/A check")
    for c in (c for c in stats.family(SPEED_AA_FAMILY) if c.effect.p is not None):
        parts.append(
            f"speed A/A (baseline timed against itself, {c.level:g}%) {effect_of(c)} over {c.effect.n} sessions: "
            f"{c.reading(stats.alpha)}"
        )
    controls = [c for c in stats.family(POSITIVE_CONTROL_FAMILY) if c.effect.p is not None]
    if controls:
        found = sum(c.significant(stats.alpha) for c in controls)
        levels = ", ".join(f"{level:g}%" for level in sorted({c.level or 0.0 for c in controls}))
        parts.append(
            f"positive control (forced head states; {levels}): detected in {found} of {len(controls)}"
        )
    return "; ".join(parts) if parts else "no A/A check was run"


def _limits_line(stats: Statistics) -> str:
    prompt_rows = [c for c in stats.comparisons if c.role == "primary" and "prompt" in c.units and c.effect.n]
    parts = []
    if prompt_rows:
        floor = min((c.p_floor_holm for c in prompt_rows if c.p_floor_holm is not None), default=None)
        parts.append(
            f"n = {min(c.effect.n for c in prompt_rows)} prompts (smallest attainable Holm p {floor_text(floor)})"
        )
    if _controls_only(stats):
        return "positive controls only: no question was asked, so n and timing limit nothing here"
    timed = [c for c in stats.family("primary") if c.metric == SPEED]
    alone = any("timed alone" in note for note in stats.notes)
    parts.append(
        "speed timed alone (unpaired in time)"
        if alone
        else "speed timed side by side per session"
        if timed
        else "speed not timed side by side"
    )
    return "; ".join(parts)


def headline(stats: Statistics) -> list[str]:
    """At most ``HEADLINE_LINES`` lines: the answer, where it comes from, its speed cost, the A/A, the limits."""
    lines = ["## Headline", ""]
    primary = _primary_quality(stats)
    if not primary:
        lines.append(f"- **Primary answer:** {no_primary_text(stats)}.")
    for c in primary[:2]:
        lines.append(
            f"- **Primary answer** ({c.series.label()} / {c.arm.label}, reference perplexity agency/baseline over "
            f"the pruned levels): {_cell_text(c, stats.alpha)}."
        )
    if len(primary) > 2:
        lines.append(f"- {len(primary) - 2} more series or arms: see 'Primary endpoint'.")
    if _agency_present(stats):
        lines.append(f"- **Where it comes from:** {_where_line(stats)}.")
    speed = [c for c in stats.family("primary") if c.metric == SPEED]
    lines.append(
        "- **Speed cost:** "
        + (
            "; ".join(f"tokens/s agency/baseline {_cell_text(c, stats.alpha)}" for c in speed[:2])
            if speed
            else "not measured: the agency arms here are positive controls"
            if _controls_only(stats)
            else "not measured side by side (no paired timing sessions)"
        )
        + "."
    )
    lines.append(f"- **A/A checks:** {_aa_line(stats)}.")
    lines.append(f"- **Limits:** {_limits_line(stats)}.")
    return lines[: HEADLINE_LINES + 2] + [""]


# -- attribution ---------------------------------------------------------------------------------------
def _find(stats: Statistics, family: str, a: Attribution, arm, other, at: float | None) -> Comparison | None:
    return next(
        (
            c
            for c in stats.family(family)
            if c.series == a.series
            and c.arm == arm
            and c.other == other
            and c.metric == QUALITY
            and c.level == at
        ),
        None,
    )


def attribution_section(stats: Statistics) -> list[str]:
    lines = ["## Where the effect comes from: the pruning choice or the run-time layer", ""]
    if not _agency_present(stats):  # protected baselines alone (protection_dose): their table only
        table = _protection_lines(stats)
        return ["## Protected baselines against the baseline (secondary)", "", *table] if table else []
    if _controls_only(stats):
        return lines + [
            "Nothing to attribute: the agency arms here force head states (positive controls).",
            "",
        ]
    if not stats.attributions:
        return lines + [f"The agency effect is {not_attributed_text()}.", ""]
    lines.append(
        "Per prompt on the log scale the whole effect splits exactly: agency/baseline = (protected baseline/"
        f"baseline: the **{PRUNING_CHOICE}**, the same heads kept out of pruning with no agency layer) × (agency/"
        f"protected baseline: the **{RUN_TIME_LAYER}**), temperatures pooled, each with a bootstrap-t interval "
        "and a sign-flip test over prompts. The run-time layer's pooled part is primary (in the report's one "
        "Holm set: it is the claim about agency); the pruning choice's part and the per-level parts are "
        f"secondary (Holm within '{ATTRIBUTION_FAMILY}'). A gain is credited to the agency layer only when the "
        "run-time part shows it."
    )
    lines.append("")
    for a in stats.attributions:
        rows = []
        levels = sorted(
            {c.level for c in stats.family(ATTRIBUTION_FAMILY) if c.series == a.series and c.level}
        )
        for at in [None, *levels]:
            whole = a.whole if at is None else _find(stats, "Q2", a, a.arm, BASELINE_ARM, at)
            choice = (
                a.choice if at is None else _find(stats, ATTRIBUTION_FAMILY, a, a.control, BASELINE_ARM, at)
            )
            layer = a.layer if at is None else _find(stats, ATTRIBUTION_FAMILY, a, a.arm, a.control, at)
            rows.append(
                [
                    "pooled" if at is None else level(at),
                    _cell_text(whole, stats.alpha),
                    _cell_text(choice, stats.alpha),
                    _cell_text(layer, stats.alpha),
                ]
            )
        lines.append(f"**{a.series.label()} / {a.arm.label}** against {a.control.label}:")
        lines.append("")
        lines += markdown_table(
            [
                "pruned level",
                "whole: agency / baseline",
                f"{PRUNING_CHOICE}: protected / baseline",
                f"{RUN_TIME_LAYER}: agency / protected",
            ],
            rows,
        )
        lines += [f"**Answer:** {a.sentence}.", ""]
    return lines + _protection_lines(stats)


def _protection_lines(stats: Statistics) -> list[str]:
    """Each protected baseline (random protection, the dose over the protected fraction) against the baseline."""
    lines: list[str] = []
    others = [c for c in stats.family(PROTECTION_FAMILY) if c.level is None]
    if others:
        lines.append(
            "Other protected baselines (random protection: does it matter which heads are kept; the dose-response "
            f"over the protected fraction), each against the baseline, pruned levels pooled (secondary, Holm within "
            f"'{PROTECTION_FAMILY}'):"
        )
        lines.append("")
        lines += markdown_table(
            ["series", "arm", "reference perplexity / baseline [95% CI]", "Holm p", "reading"],
            [
                [c.series.label(), c.arm.label, effect_of(c), pval(c.p_holm), c.reading(stats.alpha)]
                for c in others
            ],
        )
    return lines


# -- strategies --------------------------------------------------------------------------------------------
def _damage(stats: Statistics) -> dict[tuple[str, str], float]:
    """Per (series without its method, method): the baseline's geometric-mean perplexity at the pruned levels
    over that at 0%, averaged on the log scale over pruned levels and temperatures (a description)."""

    by: dict[tuple[str, str], list[float]] = {}
    for c in stats.cells:
        if c.cell.arm.label != "baseline" or c.cell.level == 0:
            continue
        unpruned = next(
            (
                x
                for x in stats.cells
                if x.cell.series == c.cell.series
                and x.cell.temperature == c.cell.temperature
                and x.cell.level == 0
                and x.cell.arm == c.cell.arm
            ),
            None,
        )
        here, base = c.metrics.get(QUALITY), unpruned.metrics.get(QUALITY) if unpruned else None
        if here and base and here.mean and base.mean:
            key = (c.cell.series.model + str(c.cell.series.split), c.cell.series.method)
            by.setdefault(key, []).append(math.log(here.mean / base.mean))
    return {k: math.exp(sum(v) / len(v)) for k, v in by.items()}


def strategies_section(stats: Statistics) -> list[str]:
    rows = stats.family(STRATEGY_FAMILY)
    if not rows:
        return []
    lines = ["## Pruning strategies compared (secondary)", ""]
    lines.append(
        "Series that differ only in the pruning method, baseline against baseline (and each agency arm against the "
        "gradient-ranked baseline), reference perplexity per prompt on the log scale (samples share seeds across "
        f"methods), at each pruned level and pooled; Holm within '{STRATEGY_FAMILY}'."
    )
    lines.append("")
    damage = _damage(stats)
    groups: dict[str, dict[str, float]] = {}
    for (group, method), value in damage.items():
        groups.setdefault(group, {})[method] = value
    for methods in groups.values():
        if len(methods) < 2:
            continue
        best = min(methods, key=methods.__getitem__)
        against = [
            c
            for c in rows
            if c.level is None
            and c.arm == c.other
            and (c.contrast.startswith(f"{best} baseline /") or f"/ {best} baseline," in c.contrast)
        ]
        shown_against = "; ".join(
            f"{c.contrast.split(',')[0]}: {effect_of(c)} (Holm p {pval(c.p_holm)}, {c.reading(stats.alpha)})"
            for c in against
        )
        order = ", ".join(f"{m} ×{v:.3g}" for m, v in sorted(methods.items(), key=lambda kv: kv[1]))
        lines.append(
            f"**Answer:** {best} degrades least (baseline reference perplexity pruned / unpruned, pruned levels "
            f"pooled: {order})" + (f"; paired: {shown_against}." if shown_against else ".")
        )
        lines.append("")
    lines += markdown_table(
        ["series", "level", "contrast", "effect [95% CI]", "test, n", "Holm p", "reading"],
        [
            [
                c.series.label(),
                level(c.level) if c.level is not None else "pooled",
                c.contrast,
                effect_of(c),
                f"{c.effect.test}, n = {c.effect.n} {c.units}",
                pval(c.p_holm),
                c.reading(stats.alpha),
            ]
            for c in rows
        ],
    )
    return lines


# -- the manipulation check ---------------------------------------------------------------------------------
def manipulation_section(stats: Statistics) -> list[str]:
    cells = [c for c in stats.cells if c.agency is not None]
    if not cells:
        return []
    threshold = stats.min_acted_share
    lines = ["## Manipulation check: how much the states acted", ""]
    lines.append(
        "Per condition and level: the share of the kept heads' row-forwards each non-active state took, their "
        "sum, and the mean gate mass the states removed (1 - factor). Declared once: below "
        f"{100 * threshold:g}% of head-steps the states did not act, and an ablation or sham row about them "
        "reads 'uninformative: the states did not act', never 'no significant difference'."
    )
    lines.append("")
    states = sorted({s for c in cells if c.agency and c.agency.acted_share for s in c.agency.acted_share})
    table = []
    for c in cells:
        a = c.agency
        if a is None:
            continue
        if a.acted_share is None:
            shares, total, mass, verdict = [MISSING] * len(states), MISSING, MISSING, "not recorded"
        else:
            total_share = sum(a.acted_share.values())
            shares = [f"{100 * a.acted_share.get(s, 0.0):.2f}%" for s in states]
            total, mass = f"{100 * total_share:.2f}%", f"{a.gate_mass_removed or 0.0:.4f}"
            verdict = "acted" if total_share >= threshold else "did not act"
        table.append(
            [c.cell.series.label(), f"{c.cell.temperature:g}", level(c.cell.level), c.cell.arm.label, *shares]
            + [total, mass, verdict]
        )
    lines += markdown_table(
        ["series", "T", "level", "arm", *states, "outside active", "gate mass removed", "states"], table
    )
    return lines + dose_response_section(stats) + sham_match_section(stats)


def _level_effect(stats: Statistics, series, arm, at: float) -> Comparison | None:
    return next(
        (
            c
            for c in stats.family("Q2")
            if c.series == series
            and c.arm == arm
            and c.other == BASELINE_ARM
            and c.metric == QUALITY
            and c.level == at
        ),
        None,
    )


def _dose_response_text(points: list[tuple[float, float]]) -> str:
    """The rank correlation of gate mass removed with the log quality effect over arms (a description: the arms
    share prompts and a baseline, so they are not independent samples)."""
    if len(points) < 3 or len({m for m, _ in points}) < 2:
        return f"too few arms with distinct doses ({len(points)}) for a rank correlation"
    rho = float(spearmanr([m for m, _ in points], [e for _, e in points]).statistic)
    if math.isnan(rho):
        return "no rank correlation (the effects do not vary)"
    trend = (
        "more gate mass removed goes with higher perplexity (the states cost quality)"
        if rho > 0
        else "more gate mass removed goes with lower perplexity (the states help)"
    )
    return f"Spearman rho = {rho:+.2f} over {len(points)} arms: {trend}"


def dose_response_section(stats: Statistics) -> list[str]:
    """Per pruned level: each agency arm's dose beside its quality effect against the baseline, ordered by the
    gate mass its states removed, and how the effect follows the dose."""
    rows, texts = [], []
    for series in sorted({c.cell.series for c in stats.cells}):
        for at in sorted({c.cell.level for c in stats.cells if c.cell.series == series and c.cell.level > 0}):
            arms = sorted(
                {
                    c.cell.arm
                    for c in stats.cells
                    if c.cell.series == series and c.cell.level == at and c.agency
                }
            )
            doses = [(arm, _cell_dose(stats, series, arm.label, at)) for arm in arms]
            found = sorted(((a, d) for a, d in doses if d is not None), key=lambda ad: ad[1].mass)
            if not any(d.share >= stats.min_acted_share for _, d in found):
                continue
            points = []
            for arm, dose in found:
                effect = _level_effect(stats, series, arm, at)
                if effect is not None and effect.effect.estimate is not None:
                    points.append((dose.mass, effect.effect.estimate))
                acted = "acted" if dose.share >= stats.min_acted_share else "did not act"
                rows.append(
                    [series.label(), level(at), arm.label, f"{100 * dose.share:.2f}%", f"{dose.mass:.4f}"]
                    + [acted, _cell_text(effect, stats.alpha)]
                )
            texts.append(f"- {series.label()} at {level(at)}: {_dose_response_text(points)}.")
    if not rows:
        return []
    lines = ["### Dose-response: quality against how much the states acted", ""]
    lines.append(
        "Each agency arm at each pruned level where some arm's states acted, ordered by the gate mass its states "
        "removed, beside its reference perplexity against the baseline (per prompt, Holm within its question). "
        "The rank correlation describes the trend over arms; it is not a test (the arms share prompts and one "
        "baseline)."
    )
    lines.append("")
    lines += markdown_table(
        [
            "series",
            "level",
            "arm",
            "outside active",
            "gate mass removed",
            "states",
            "reference perplexity agency / baseline [95% CI]",
        ],
        rows,
    )
    return lines + texts + [""]


def _cell_dose(stats: Statistics, series, arm_label: str, at: float) -> Dose | None:
    """An arm's dose at one level, the mean over its temperatures (None when a cell does not say)."""
    cells = [
        c
        for c in stats.cells
        if c.cell.series == series and c.cell.arm.label == arm_label and c.cell.level == at
    ]
    doses = [
        dose_of([(c.agency.acted_share, c.agency.gate_mass_removed)]) if c.agency else None for c in cells
    ]
    if not doses or any(d is None for d in doses):
        return None
    return Dose(sum(d.share for d in doses if d) / len(doses), sum(d.mass for d in doses if d) / len(doses))


def sham_match_section(stats: Statistics) -> list[str]:
    """The sham's dose beside the real arm's at each level, and whether it is matched within the tolerance."""
    real_of = {c.cell.arm.label: c.cell.arm.real for c in stats.cells if c.cell.arm.sham}
    shams = sorted({(c.cell.series, c.cell.arm.label) for c in stats.cells if c.cell.arm.sham})
    if not shams:
        return []
    lines = ["### Is the sham matched to the real arm?", ""]
    lines.append(
        "The sham replays the states and factors of its real arm (the same settings without the sham) on other "
        "kept heads of each layer, so its dose equals the real arm's by construction; records from other code "
        "or a sham whose real arm ran with other settings can still drift. Declared once: the sham "
        f"is matched when its share of head-steps outside active and its gate mass removed are each within "
        f"{SHAM_TOLERANCE:.0%} (relative) of its real arm's at the same level; an unmatched or inert "
        "sham is not evidence about which heads the states pick."
    )
    lines.append("")
    table = []
    for series, label in shams:
        for at in sorted(
            {c.cell.level for c in stats.cells if c.cell.series == series and c.cell.arm.label == label}
        ):
            real = _cell_dose(stats, series, str(real_of[label]), at)
            sham = _cell_dose(stats, series, label, at)
            _, said = sham_verdict(real, sham, stats.min_acted_share)
            table.append(
                [
                    series.label(),
                    level(at),
                    label,
                    MISSING if real is None else f"{100 * real.share:.2f}% / {real.mass:.4f}",
                    MISSING if sham is None else f"{100 * sham.share:.2f}% / {sham.mass:.4f}",
                    said,
                ]
            )
    lines += markdown_table(
        [
            "series",
            "level",
            "sham arm",
            "real arm: outside active / gate mass",
            "sham: outside active / gate mass",
            "matched?",
        ],
        table,
    )
    return lines


# -- the A/A at every pruned level ---------------------------------------------------------------------------
def inert_aa_section(stats: Statistics) -> list[str]:
    rows = stats.family(INERT_AA_FAMILY)
    lines = ["### A/A at every pruned level: the inert agency arm (secondary)", ""]
    if not rows:
        return lines + [
            "No inert agency arm (consent_pruning, state_gating, overload and misalignment all off) was run, so "
            "the pruned levels have no A/A check.",
            "",
        ]
    lines.append(
        "The agency layer with every part off must write and score what the baseline does at every level: "
        "reference perplexity paired over prompts (temperatures pooled), corpus perplexity within 1%."
    )
    lines.append("")
    table = []
    for c in rows:
        corpus = MISSING
        ratios = []
        for cell in stats.cells:
            if cell.cell.series == c.series and cell.cell.level == c.level and cell.cell.arm == c.arm:
                base = next(
                    (
                        x
                        for x in stats.cells
                        if x.cell.series == c.series
                        and x.cell.level == c.level
                        and x.cell.temperature == cell.cell.temperature
                        and x.cell.arm == c.other
                    ),
                    None,
                )
                a, b = cell.metrics.get(CORPUS), base.metrics.get(CORPUS) if base else None
                if a and b and a.mean and b.mean:
                    ratios.append(a.mean / b.mean)
        if ratios:
            corpus = corpus_ratio_text(max(ratios, key=lambda r: abs(r - 1)))
        table.append((c, level(c.level), corpus))
    lines += aa_table(table, "level", stats.alpha)
    return lines


def credited_elsewhere(rows: list[Comparison], alpha: float) -> list[str]:
    """Significant gains over the baseline that the attribution does not credit to the agency layer."""
    return [
        f"{spec(c.metric).label} {c.contrast} {effect_of(c)} (Holm p {pval(c.p_holm)}): {c.override}"
        for c in rows
        if c.significant(alpha) and c.better() and c.override is not None and c.family != LAYER_FAMILY
    ]
