"""The frontier: per pruning level, the best arm without agency, chosen on the calibration text, and what the
agency arm, compensation and the random draws look like against it.

A *ranking arm* is a pruning method with its pruned heads zeroed or compensated (``model.pruning.compensate``),
no agency and no protection. Per level:

* **The frontier arm** is the named ranking arm (not the random ranking) with the lowest perplexity on the
  calibration text (``calibration_perplexity``). The choice reads no evaluation value, so the arm it picks is
  then measured on held-out text without having been selected on it.
* **The agency arm against it**: each agency arm at that level over the evaluation windows (the log ratio of
  each window's perplexity, windows read as correlated: ``estimators.window_effect``); a secondary family,
  Holm within it. Its reading says whether the agency arm beats, ties or loses to the frontier.
* **What small damage shows**: the agency arm against the frontier arm on the KL divergence from the unpruned
  model (per evaluation window, windows correlated) and on induction accuracy (per probe sequence, paired: the
  same sequences for every arm); exploratory.
* **Compensation** per ranking: compensated against zeroed, paired by window (exploratory).
* **The placebo band**: the random ranking's draws (seeds), zeroed and compensated: median and 2.5-97.5%.
* **Question 2 on the frontier**: the highest level whose frontier arm stays within the quality margin of the
  unpruned model (the one-sided 95% upper bound of its corpus perplexity ratio, windows as units), or "none".
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from record.identity import AGENCY_ENABLED_KEY, LEVEL_KEY, METHOD_KEY, MODEL_KEY
from record.schema import ConditionRecord
from reporting.analyses.base import Analysis
from reporting.comparison import Comparison, Family, untested
from reporting.design import Arm, Design, Series, protection_of
from reporting.estimators import WINDOW_TEST, Effect, paired_effect, window_effect
from reporting.format import MISSING
from reporting.format import level as level_text
from reporting.optimal import DEFAULT_QUALITY_MARGIN
from reporting.results import Statistics
from reporting.sections import HEADER, comparison_row, markdown_table
from reporting.units import CORPUS, Units

COMPENSATE_KEY = "model.pruning.compensate"
SELECTION = "calibration_perplexity"
RANDOM = "random"
ONE_SIDED = 0.90  # a two-sided 90% interval's upper end is the one-sided 95% upper bound

FRONTIER_FAMILY = Family(
    "frontier",
    "secondary",
    "the agency arm against the frontier: per level, against the arm without agency with the lowest "
    "calibration-text perplexity, corpus perplexity paired by evaluation window (windows read as correlated)",
)
PROBES_FAMILY = Family(
    "frontier-probes",
    "exploratory",
    "the agency arm against the frontier arm on what small damage shows: KL divergence from the unpruned "
    "model paired by evaluation window (windows read as correlated), induction accuracy paired by probe sequence",
)
KL, INDUCTION = "corpus_kl", "induction_accuracy"
COMPENSATION_FAMILY = Family(
    "compensation",
    "exploratory",
    "compensation per ranking: pruned heads' mean output folded into the bias against zeroed heads, corpus "
    "perplexity paired by evaluation window",
)


@dataclass(frozen=True)
class RankingArm:
    """One ranking arm at one level: its per-window mean NLL (records averaged), selection score and the other
    evaluation metrics (None where not measured)."""

    model: str
    method: str
    compensate: str
    level: float
    windows: tuple[float, ...]  # per evaluation window, mean NLL (left out of the description)
    calibration_perplexity: float | None
    corpus_perplexity: float | None
    kl: float | None
    induction_accuracy: float | None
    kl_windows: tuple[float, ...] = ()  # per evaluation window, mean KL (left out of the description)
    induction: tuple[float, ...] = ()  # per probe sequence, accuracy (left out of the description)

    @property
    def label(self) -> str:
        return f"{self.method}, {'compensated' if self.compensate == 'mean' else 'zeroed'}"


@dataclass(frozen=True)
class FrontierLevel:
    """One level of one model: the frontier arm and what it was chosen among; the placebo bands; its ratio to
    the unpruned model with the one-sided upper bound; the agency arms' corpus perplexity."""

    model: str
    level: float
    chosen: RankingArm | None
    candidates: list[RankingArm]
    placebo: dict[str, tuple[float, float, float, int]]  # zeroed/compensated: median, 2.5%, 97.5%, draws
    to_unpruned: float | None  # the frontier arm's corpus perplexity ratio to the unpruned model
    upper: float | None  # its one-sided 95% upper bound
    within: bool | None
    agency: dict[str, float]  # agency arm label -> corpus perplexity
    unpruned: float | None = None  # the unpruned model's corpus perplexity on the same windows


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _geo(values: list[float]) -> float | None:
    logs = [math.log(v) for v in values if v > 0]
    return math.exp(statistics.fmean(logs)) if logs else None


def _windows(records: list[ConditionRecord]) -> tuple[float, ...]:
    """The records' per-window mean NLL, averaged window by window (records that keep the same windows)."""
    rows = [r.corpus_windows.mean_nll for r in records if r.corpus_windows is not None]
    if not rows or len({len(r) for r in rows}) != 1:
        return ()
    return tuple(float(v) for v in np.mean(np.asarray(rows, dtype=float), axis=0))


def _unit_values(records: list[ConditionRecord], name: str) -> tuple[float, ...]:
    """The records' per-unit values of a metric (``unit_values``), averaged unit by unit."""
    rows = [r.unit_values[name] for r in records if name in r.unit_values]
    if not rows or len({len(r) for r in rows}) != 1:
        return ()
    return tuple(float(v) for v in np.mean(np.asarray(rows, dtype=float), axis=0))


def _metric(records: list[ConditionRecord], name: str, log: bool) -> float | None:
    values = [r.condition_metrics[name] for r in records if name in r.condition_metrics]
    return _geo(values) if log else _mean(values)


def _plain(design: Design, record: ConditionRecord) -> bool:
    """No agency and no protection: a ranking arm."""
    flat = design.flat[record.condition_id]
    return not flat.get(AGENCY_ENABLED_KEY) and protection_of(flat)[0] == "none"


def ranking_arms(design: Design) -> dict[tuple[str, float], list[RankingArm]]:
    """Every named ranking arm per (model, level), records of one arm (temperatures) averaged."""
    groups: dict[tuple[str, float, str, str], list[ConditionRecord]] = defaultdict(list)
    for record in design.records:
        flat = design.flat[record.condition_id]
        if not _plain(design, record) or flat.get(METHOD_KEY) == RANDOM:
            continue
        key = (
            str(flat.get(MODEL_KEY)),
            float(flat[LEVEL_KEY]),
            str(flat.get(METHOD_KEY)),
            str(flat.get(COMPENSATE_KEY) or "none"),
        )
        groups[key].append(record)
    result: dict[tuple[str, float], list[RankingArm]] = defaultdict(list)
    for (model, level, method, compensate), records in sorted(groups.items()):
        result[(model, level)].append(
            RankingArm(
                model,
                method,
                compensate,
                level,
                _windows(records),
                _metric(records, SELECTION, log=True),
                _metric(records, CORPUS, log=True),
                _metric(records, KL, log=False),
                _metric(records, INDUCTION, log=False),
                _unit_values(records, KL),
                _unit_values(records, INDUCTION),
            )
        )
    return result


def choose(candidates: list[RankingArm]) -> RankingArm | None:
    """The frontier arm: the lowest calibration-text perplexity (ties by label). Reads no evaluation value."""
    scored = [c for c in candidates if c.calibration_perplexity is not None]
    return min(scored, key=lambda c: (c.calibration_perplexity, c.label)) if scored else None


def _unpruned_records(design: Design, model: str) -> list[ConditionRecord]:
    return [
        r
        for r in design.records
        if _plain(design, r)
        and str(design.flat[r.condition_id].get(MODEL_KEY)) == model
        and float(design.flat[r.condition_id][LEVEL_KEY]) == 0
    ]


def _unpruned_perplexity(design: Design, model: str) -> float | None:
    return _metric(_unpruned_records(design, model), CORPUS, log=True)


MIN_CANDIDATES = 2  # a frontier is a choice: one ranking arm alone is a baseline, not the best of several


def _pruned_levels(design: Design) -> list[tuple[str, float, list[RankingArm], RankingArm | None]]:
    """(model, level, its named ranking arms, the frontier arm or None) per pruned level; None also where
    fewer than ``MIN_CANDIDATES`` arms were run (a quickstart's one ranking is no frontier to read against)."""
    return [
        (model, level, candidates, choose(candidates) if len(candidates) >= MIN_CANDIDATES else None)
        for (model, level), candidates in sorted(ranking_arms(design).items())
        if level > 0
    ]


def _placebo(design: Design, model: str, level: float) -> dict[str, tuple[float, float, float, int]]:
    draws: dict[str, list[float]] = defaultdict(list)
    per_seed: dict[tuple[str, str], list[float]] = defaultdict(list)
    for record in design.records:
        flat = design.flat[record.condition_id]
        if (
            _plain(design, record)
            and flat.get(METHOD_KEY) == RANDOM
            and str(flat.get(MODEL_KEY)) == model
            and float(flat[LEVEL_KEY]) == level
            and CORPUS in record.condition_metrics
        ):
            kind = "compensated" if flat.get(COMPENSATE_KEY) == "mean" else "zeroed"
            per_seed[(kind, str(flat.get("model.seed")))].append(record.condition_metrics[CORPUS])
    for (kind, _seed), values in sorted(per_seed.items()):
        value = _geo(values)
        if value is not None:
            draws[kind].append(value)
    return {
        kind: (*(float(q) for q in np.quantile(values, [0.5, 0.025, 0.975])), len(values))  # type: ignore[misc]
        for kind, values in sorted(draws.items())
    }


def _log_ratio_effect(a: tuple[float, ...], b: tuple[float, ...], confidence: float = 0.95) -> Effect | None:
    if not a or len(a) != len(b):
        return None
    return window_effect([x - y for x, y in zip(a, b, strict=True)], confidence)


def _agency_records(design: Design, model: str, level: float) -> dict[str, list[ConditionRecord]]:
    groups: dict[str, list[ConditionRecord]] = defaultdict(list)
    for record in design.records:
        flat = design.flat[record.condition_id]
        if (
            flat.get(AGENCY_ENABLED_KEY)
            and str(flat.get(MODEL_KEY)) == model
            and float(flat[LEVEL_KEY]) == level
            and protection_of(flat)[0] == "none"
        ):
            cell = design.cell_of(record)
            groups[f"{cell.series.label()} / {cell.arm.label}"].append(record)
    return groups


def _described(arm: RankingArm) -> RankingArm:
    """The arm without its per-unit values (the description, statistics.json, keeps summaries only)."""
    return dataclasses.replace(arm, windows=(), kl_windows=(), induction=())


def frontier_levels(design: Design, units: Units) -> list[FrontierLevel]:
    """Per model and pruned level with named ranking arms: the frontier (see the module docstring)."""
    result = []
    for model, level, candidates, chosen in _pruned_levels(design):
        if chosen is None:  # no arm has a calibration-text score: nothing can be chosen, so no frontier
            continue
        unpruned = _windows(_unpruned_records(design, model))
        effect = _log_ratio_effect(chosen.windows, unpruned)
        to_unpruned = upper = within = None
        if effect is not None and effect.estimate is not None:
            to_unpruned = math.exp(effect.estimate)
            high = effect.interval_at(ONE_SIDED)[1]
            upper = None if high is None else math.exp(high)
            within = upper is not None and upper <= DEFAULT_QUALITY_MARGIN
        agency = {
            label: value
            for label, records in _agency_records(design, model, level).items()
            if (value := _metric(records, CORPUS, log=True)) is not None
        }
        result.append(
            FrontierLevel(  # the windows stay out of the description (statistics.json)
                model,
                level,
                _described(chosen),
                [_described(c) for c in candidates],
                _placebo(design, model, level),
                to_unpruned,
                upper,
                within,
                agency,
                _unpruned_perplexity(design, model),
            )
        )
    return result


def _against_frontier(
    design: Design, records: list[ConditionRecord], chosen: RankingArm, level: float
) -> list[Comparison]:
    """One agency arm against the frontier arm: corpus perplexity (secondary), KL and induction (exploratory).
    A side without the per-unit values (its evaluation failed) gives an untested row that says so, never none."""
    cell = design.cell_of(records[0])
    frontier_arm = Arm(f"frontier ({chosen.label})")
    rows = []
    windows, sequences = "evaluation windows", "induction sequences"
    readings = (  # family, metric, kind, sign (+1: higher is better), the agency arm's units, the frontier's
        (FRONTIER_FAMILY, CORPUS, "ratio", -1, _windows(records), chosen.windows, windows),
        (PROBES_FAMILY, KL, "difference", -1, _unit_values(records, KL), chosen.kl_windows, windows),
        (
            PROBES_FAMILY,
            INDUCTION,
            "difference",
            1,
            _unit_values(records, INDUCTION),
            chosen.induction,
            sequences,
        ),
    )
    for family, metric, kind, sign, mine, theirs, units in readings:
        if not mine and not theirs and family is PROBES_FAMILY:
            continue  # the probe was not run here (neither side has it): nothing to read
        what = "" if metric == CORPUS else f"{metric} "
        contrast = f"agency/frontier ({chosen.label}) {what}at {level:g}%, per {units[:-1]}"
        override = None
        if not mine or len(mine) != len(theirs):  # a failed evaluation is the worst outcome, not a gap
            failed = "the agency arm" if not mine else "the frontier arm"
            note = f"{failed}'s {metric} is missing: its evaluation failed, read as the worst outcome"
            effect = untested(WINDOW_TEST, note)
            override = "loses to" if not mine else "beats"
        elif units == sequences:  # independent units: the paired test (ties and skew kept honest)
            key = family.key(cell.series, cell.arm, frontier_arm, metric, contrast)
            effect = paired_effect([a - b for a, b in zip(mine, theirs, strict=True)], key)
        else:  # per-window mean NLL differences are log ratios; KL differences are in nats per token
            effect = window_effect([a - b for a, b in zip(mine, theirs, strict=True)])
        rows.append(
            family.compare(
                series=cell.series,
                arm=cell.arm,
                other=frontier_arm,
                metric=metric,
                contrast=contrast,
                units=units,
                kind=kind,
                effect=effect,
                sign=sign,
                level=level,
                override=override,
            )
        )
    return rows


def frontier_comparisons(design: Design, units: Units) -> list[Comparison]:
    """Each agency arm against the frontier arm of its level, and compensation per ranking, by window."""
    result = []
    for model, level, candidates, chosen in _pruned_levels(design):
        if chosen is not None:
            for records in _agency_records(design, model, level).values():
                result += _against_frontier(design, records, chosen, level)
        by_method: dict[str, dict[str, RankingArm]] = defaultdict(dict)
        for arm in candidates:
            by_method[arm.method][arm.compensate] = arm
        for method, pair in sorted(by_method.items()):
            if "mean" not in pair or "none" not in pair:
                continue
            effect = _log_ratio_effect(pair["mean"].windows, pair["none"].windows)
            if effect is None:
                continue
            result.append(
                COMPENSATION_FAMILY.compare(
                    series=Series(model, method),
                    arm=Arm("compensated"),
                    other=Arm("zeroed"),
                    metric=CORPUS,
                    contrast=f"compensated/zeroed {method} at {level:g}%, per evaluation window",
                    units="evaluation windows",
                    effect=effect,
                    sign=-1,
                    level=level,
                )
            )
    return result


def _num(value: float | None, digits: int = 4) -> str:
    return MISSING if value is None else f"{value:.{digits}g}"


def frontier_verdict(row: Comparison, alpha: float) -> str:
    """beats / ties / loses: the agency arm against the frontier at its level (Holm within the family)."""
    if row.override is not None:  # a side whose evaluation failed
        return row.override
    p = row.p_holm if row.p_holm is not None else row.effect.p
    if row.effect.estimate is None or p is None:
        return "cannot tell"
    if p >= alpha:
        return "ties (no difference detected)"
    return "beats" if row.effect.estimate < 0 else "loses to"


def frontier_section(stats: Statistics) -> list[str]:
    """The frontier table, question 2 on the frontier, the agency arm against it and compensation per ranking:
    the frontier arm is named beside every number so no reader mistakes it for an evaluation-chosen best."""
    levels: list[FrontierLevel] = stats.descriptions.get("frontier", [])
    if not levels:
        return []
    lines = ["## The frontier: the best arm without agency per level, chosen on the calibration text", ""]
    lines.append(
        "Per level, the ranking arm (a pruning method with its pruned heads zeroed or compensated, no agency) with "
        "the lowest perplexity on the calibration text is the frontier arm: chosen without reading any "
        "evaluation value, then measured on the held-out evaluation text. Corpus perplexity and KL from the "
        "unpruned model are over the evaluation windows; induction accuracy is the share of the repeated "
        "random sequences' second copy predicted. The ratio to unpruned has its one-sided 95% upper bound "
        f"(windows as correlated units); a level is usable when that bound is within ×{DEFAULT_QUALITY_MARGIN:g}. "
        "The placebo band is the random ranking's draws (median [2.5%, 97.5%], draws)."
    )
    lines.append("")
    rows = []
    for fl in levels:
        c = fl.chosen
        band = "; ".join(
            f"{kind} {_num(m)} [{_num(lo)}, {_num(hi)}] ({n})" for kind, (m, lo, hi, n) in fl.placebo.items()
        )
        rows.append(
            [
                fl.model.rstrip("/").rsplit("/", 1)[-1],
                level_text(fl.level),
                MISSING if c is None else c.label,
                MISSING if c is None else _num(c.calibration_perplexity),
                MISSING if c is None else _num(c.corpus_perplexity),
                MISSING if c is None else _num(c.kl, 3),
                MISSING if c is None else _num(c.induction_accuracy, 3),
                MISSING
                if fl.to_unpruned is None
                else f"×{fl.to_unpruned:.3g} (≤ ×{_num(fl.upper, 3)}){' usable' if fl.within else ''}",
                band or MISSING,
            ]
        )
    lines += markdown_table(
        [
            "model",
            "level",
            "frontier arm",
            "calibration ppl",
            "corpus ppl",
            "KL (nats/token)",
            "induction acc.",
            "to unpruned (95% upper)",
            "random ranking band",
        ],
        rows,
    )
    lines += ["", question_2_on_frontier(levels), ""]
    agency_rows = stats.family(FRONTIER_FAMILY)
    if agency_rows:
        lines += ["### The agency arm against the frontier (secondary, Holm within these rows)", ""]
        lines += markdown_table(
            [*HEADER, "against the frontier"],
            [[*comparison_row(c, stats.alpha), frontier_verdict(c, stats.alpha)] for c in agency_rows],
        )
        lines.append("")
    probe_rows = stats.family(PROBES_FAMILY)
    if probe_rows:
        lines += [
            "### What small damage shows: KL and induction against the frontier (exploratory)",
            "",
            "KL from the unpruned model (nats per token, lower is better) paired by evaluation window; induction "
            "accuracy (higher is better) paired by probe sequence, the same sequences for every arm.",
            "",
        ]
        lines += markdown_table(HEADER, [comparison_row(c, stats.alpha) for c in probe_rows])
        lines.append("")
    compensation_rows = stats.family(COMPENSATION_FAMILY)
    if compensation_rows:
        lines += ["### Compensation per ranking (exploratory)", ""]
        lines += markdown_table(HEADER, [comparison_row(c, stats.alpha) for c in compensation_rows])
        lines.append("")
    return lines


def question_2_on_frontier(levels: list[FrontierLevel]) -> str:
    """The highest level whose frontier arm stays within the margin, per model, or an explicit none."""
    parts = []
    for model in sorted({fl.model for fl in levels}):
        usable = [fl.level for fl in levels if fl.model == model and fl.within]
        name = model.rstrip("/").rsplit("/", 1)[-1]
        if usable:
            parts.append(f"{name}: **{level_text(max(usable))}**")
        else:
            parts.append(f"{name}: **none within ×{DEFAULT_QUALITY_MARGIN:g}** at any pruned level measured")
    return (
        "**Question 2 on the frontier** (the highest level whose frontier arm's corpus perplexity stays within "
        f"×{DEFAULT_QUALITY_MARGIN:g} of the unpruned model, one-sided 95% upper bound): "
        + "; ".join(parts)
        + "."
    )


ANALYSIS = Analysis(
    "frontier",
    (FRONTIER_FAMILY, PROBES_FAMILY, COMPENSATION_FAMILY),
    compare=frontier_comparisons,
    describe=frontier_levels,
    section=frontier_section,
    section_rank=84,
)
