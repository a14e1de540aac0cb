"""The headline that opens ``summary.md``: the answer, where it comes from, the speed A/A and the limits,
in at most ``HEADLINE_LINES`` lines."""

from __future__ import annotations

from reporting.analyses.aa import POSITIVE_CONTROL_FAMILY, SPEED_AA_FAMILY, detectable_text
from reporting.analyses.attribution import not_attributed_text
from reporting.analyses.frontier import FRONTIER_FAMILY, frontier_verdict
from reporting.analyses.inert_aa import INERT_AA_FAMILY
from reporting.comparison import SPEED
from reporting.format import floor_text
from reporting.results import Statistics
from reporting.sections import (
    agency_present,
    cell_text,
    controls_only,
    effect_of,
    no_primary_text,
    primary_quality,
)

HEADLINE_LINES = 10


def _where_line(stats: Statistics) -> str:
    if controls_only(stats):
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
            f"{c.reading(stats.alpha)}{detectable_text(c)}"
        )
    controls = [c for c in stats.family(POSITIVE_CONTROL_FAMILY) if c.effect.p is not None]
    if controls:
        found = sum(c.significant(stats.alpha) for c in controls)
        levels = ", ".join(f"{level:g}%" for level in sorted({c.level or 0.0 for c in controls}))
        parts.append(
            f"positive control (forced head states; {levels}): detected in {found} of {len(controls)}"
        )
    return "; ".join(parts) if parts else "no A/A check was run"


def _frontier_line(stats: Statistics) -> str | None:
    """Per agency arm, where it beats, ties or loses to the best arm without agency (chosen on calibration)."""
    rows = stats.family(FRONTIER_FAMILY)
    if not rows:
        return None
    by_arm: dict[str, list[str]] = {}
    for c in rows:
        verdict = frontier_verdict(c, stats.alpha).split(" (")[0]
        by_arm.setdefault(c.arm.label, []).append(f"{c.level:g}% {verdict} ({effect_of(c)})")
    return "; ".join(f"{arm}: {', '.join(parts)}" for arm, parts in by_arm.items())


def _limits_line(stats: Statistics) -> str:
    prompt_rows = [c for c in stats.comparisons if c.role == "primary" and "prompt" in c.units and c.effect.n]
    parts = []
    if prompt_rows:
        floor = min((c.p_floor_holm for c in prompt_rows if c.p_floor_holm is not None), default=None)
        parts.append(
            f"n = {min(c.effect.n for c in prompt_rows)} prompts (smallest attainable Holm p {floor_text(floor)})"
        )
    if controls_only(stats):
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
    primary = primary_quality(stats)
    if not primary:
        lines.append(f"- **Primary answer:** {no_primary_text(stats)}.")
    for c in primary[:2]:
        lines.append(
            f"- **Primary answer** ({c.series.label()} / {c.arm.label}, reference perplexity agency/baseline over "
            f"the pruned levels): {cell_text(c, stats.alpha)}."
        )
    if len(primary) > 2:
        lines.append(f"- {len(primary) - 2} more series or arms: see 'Primary endpoint'.")
    if agency_present(stats):
        lines.append(f"- **Where it comes from:** {_where_line(stats)}.")
    speed = [c for c in stats.family("primary") if c.metric == SPEED]
    lines.append(
        "- **Speed cost:** "
        + (
            "; ".join(f"tokens/s agency/baseline {cell_text(c, stats.alpha)}" for c in speed[:2])
            if speed
            else "not measured: the agency arms here are positive controls"
            if controls_only(stats)
            else "not measured side by side (no paired timing sessions)"
        )
        + "."
    )
    frontier = _frontier_line(stats)
    if frontier:
        lines.append(f"- **Against the frontier:** {frontier}.")
    lines.append(f"- **A/A checks:** {_aa_line(stats)}.")
    lines.append(f"- **Limits:** {_limits_line(stats)}.")
    return lines[: HEADLINE_LINES + 2] + [""]


def warned_headline(stats: Statistics) -> list[str]:
    """The headline, its speed cost line carrying the speed A/A's warning when that is outside noise."""
    warning = stats.speed_warning
    lines = headline(stats)
    if warning is None:
        return lines
    return [
        f"{line} **Warning:** {warning}." if line.startswith("- **Speed cost:**") else line for line in lines
    ]
