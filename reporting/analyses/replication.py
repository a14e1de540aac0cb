"""Replication across models: each answer asked of several models, never pooled, read model by model.

Records of several models in one report make one series per model, so every comparison is already made per
model. This section pairs them: the same family, contrast, arms, metric, level and temperature, and the same
series apart from the model. Per answer it shows each model's effect with its interval and one verdict:

* **replicates**: significant on every model, in the same direction;
* **differs**: significant in opposite directions, or significant on one model while another's interval
  excludes that model's estimate (the effects are not the same size);
* **cannot tell at this n**: anything else (no model significant, or one is and the others' intervals are too
  wide to say whether they differ).

The primary answers, the attribution and the frontier are read; significance is each row's own (Holm within
its family, as in the rest of the report).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from reporting.analyses.base import Analysis
from reporting.comparison import Comparison
from reporting.results import Statistics
from reporting.sections import effect_of, markdown_table

READ_FAMILIES = ("attribution", "attribution-layer", "frontier")


@dataclass(frozen=True)
class Replication:
    """One answer across models: what it is, each model's row, and the verdict."""

    answer: str
    rows: list[Comparison]
    verdict: str


def _model_name(model: str) -> str:
    return model.rstrip("/").rsplit("/", 1)[-1]


def _key(c: Comparison) -> tuple:
    return (
        c.family,
        c.series.method,
        c.series.split,
        c.arm.label,
        c.other.label,
        c.metric,
        c.level,
        c.temperature,
        c.contrast,
    )


def verdict(rows: list[Comparison], alpha: float) -> str:
    """replicates / differs / cannot tell at this n (see the module docstring)."""
    significant = [
        (c, c.effect.estimate) for c in rows if c.significant(alpha) and c.effect.estimate is not None
    ]
    signs = {math.copysign(1, estimate) for _, estimate in significant}
    if len(signs) > 1:
        return "differs"
    if significant and len(significant) == len(rows):
        return "replicates"
    for c, estimate in significant:
        for other in rows:
            if other is c:
                continue
            low, high = other.effect.ci_low, other.effect.ci_high
            if low is not None and high is not None and not low <= estimate <= high:
                return "differs"
    return "cannot tell at this n"


def replications(stats: Statistics) -> list[Replication]:
    """Every answer that more than one model was asked, in the report's order."""
    groups: dict[tuple, list[Comparison]] = defaultdict(list)
    for c in stats.comparisons:
        if c.role == "primary" or c.family in READ_FAMILIES:
            groups[_key(c)].append(c)
    result = []
    for rows in groups.values():
        models = {c.series.model for c in rows}
        if len(models) < 2:
            continue
        rows = sorted(rows, key=lambda c: c.series.model)
        first = rows[0]
        answer = (
            f"{first.family}: {first.contrast}, {first.metric} ({first.arm.label} vs {first.other.label})"
        )
        if (
            first.series.split
        ):  # the same contrast in another series (e.g. both arms protected) is its own answer
            answer += " [" + ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in first.series.split) + "]"
        result.append(Replication(answer, rows, verdict(rows, stats.alpha)))
    return result


def replication_section(stats: Statistics) -> list[str]:
    """Each answer asked of several models, one row per answer with every model's effect and the verdict:
    models side by side, never a pooled number that one model could dominate."""
    found = replications(stats)
    if not found:
        return []
    lines = ["## Replication across models (each model its own estimate, never pooled)", ""]
    lines.append(
        "Each answer asked of more than one model, model by model: its effect with its interval and Holm p "
        "(within its family). **replicates**: significant on every model in the same direction; **differs**: "
        "significant in opposite directions, or significant on one model while another's interval excludes "
        "that estimate; otherwise **cannot tell at this n**."
    )
    lines.append("")
    rows = []
    for r in found:
        per_model = "; ".join(
            f"{_model_name(c.series.model)} {effect_of(c)}"
            + (f", Holm p {c.p_holm:.3g}" if c.p_holm is not None else "")
            for c in r.rows
        )
        rows.append([r.answer, per_model, f"**{r.verdict}**"])
    lines += markdown_table(["answer", "per model", "verdict"], rows)
    counts: dict[str, int] = defaultdict(int)
    for r in found:
        counts[r.verdict] += 1
    lines += ["", "In all: " + ", ".join(f"{n} {v}" for v, n in sorted(counts.items())) + "."]
    return lines


ANALYSIS = Analysis("replication", (), section=replication_section, section_rank=12)
