"""``summary.md``: the five questions of the original request, answered from the statistics.

Every sentence is derived from a number in ``statistics.json``; where a
Holm-adjusted p is at or above alpha the text says "no significant
difference", and where a question cannot be answered from the data it says
which data are missing.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from reporting.cells import Series
from reporting.format import interval, level, num, percent, pval
from reporting.metrics import ALL_METRICS, QUALITY_METRIC_NAMES, metric
from reporting.statistics import PairedRow, SlopeRow, Statistics

NO_DIFF = "no significant difference"
TABLE_METRICS = (
    "tokens_per_second",
    "first_token_latency_s",
    "reference_perplexity",
    "distinct_2",
    "repetition_rate",
    "corpus_perplexity",
)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def _paired_verdict(row: PairedRow, alpha: float) -> str:
    if row.p_wilcoxon_holm is None:
        return f"not tested ({row.test.note or 'too few pairs'})"
    if not row.significant(alpha):
        return NO_DIFF
    return "agency better" if (row.gain or 0) > 0 else "agency worse"


def _slope_verdict(row: SlopeRow, alpha: float) -> str:
    if row.difference is None or row.p_holm is None:
        reason = row.difference.note if row.difference else "one arm has no slope"
        return f"not tested ({reason})"
    if not row.significant(alpha):
        return NO_DIFF
    better = metric(row.metric).sign * (row.difference.difference or 0) > 0
    return "agency degrades less" if better else "agency degrades more"


def _metrics_in(rows: list[PairedRow]) -> list[str]:
    """The metrics present in ``rows``, in catalogue order."""
    present = {r.metric for r in rows}
    return [name for name in ALL_METRICS if name in present]


def _series_of_slopes(stats: Statistics) -> dict[Series, list[SlopeRow]]:
    grouped: dict[Series, list[SlopeRow]] = defaultdict(list)
    for row in stats.slopes:
        grouped[row.series].append(row)
    return dict(sorted(grouped.items()))


def _paired_by_series(stats: Statistics) -> dict[Series, list[PairedRow]]:
    grouped: dict[Series, list[PairedRow]] = defaultdict(list)
    for row in stats.paired:
        grouped[row.point.series].append(row)
    return dict(sorted(grouped.items()))


def _resilience(stats: Statistics) -> list[str]:
    lines = ["## 1. Does agency improve resilience to pruning?", ""]
    lines.append(
        "Slope = change of the metric per percentage point of pruning (least squares over all samples of an arm); "
        "the difference is agency minus baseline with combined standard errors; p is Holm-adjusted over all "
        f"{sum(r.difference is not None and r.difference.p is not None for r in stats.slopes)} slope comparisons."
    )
    lines.append("")
    verdicts: dict[str, int] = defaultdict(int)
    compared = False
    for series, rows in _series_of_slopes(stats).items():
        rows = [r for r in rows if r.agency is not None and r.baseline is not None]
        if not rows:
            continue
        compared = True
        lines.append(f"**{series.label()}**")
        lines.append("")
        table = []
        for r in rows:
            verdict = _slope_verdict(r, stats.alpha)
            verdicts[verdict if not verdict.startswith("not tested") else "not tested"] += 1
            d = r.difference
            table.append(
                [
                    metric(r.metric).axis_label,
                    f"{num(r.baseline.slope)} {interval(r.baseline.ci_low, r.baseline.ci_high)}",
                    f"{num(r.agency.slope)} {interval(r.agency.ci_low, r.agency.ci_high)}",
                    f"{num(d.difference)} {interval(d.ci_low, d.ci_high)}" if d else "—",
                    pval(r.p_holm),
                    verdict,
                ]
            )
        lines += _table(
            ["metric", "baseline slope", "agency slope", "difference", "Holm p", "reading"], table
        )
    if not compared:
        return lines + [
            "No series has both a baseline and an agency arm, so resilience cannot be compared.",
            "",
        ]
    better, worse = verdicts.get("agency degrades less", 0), verdicts.get("agency degrades more", 0)
    if better == 0 and worse == 0:
        answer = f"**Answer: {NO_DIFF} in any slope** — the data do not show that agency changes resilience to pruning."
    else:
        answer = (
            f"**Answer:** agency degrades significantly less in {better} and significantly more in {worse} "
            f"slope comparisons; {verdicts.get(NO_DIFF, 0)} show {NO_DIFF}."
        )
    return lines + [answer, ""]


def _optimal_level(stats: Statistics) -> list[str]:
    lines = ["## 2. Optimal pruning level", ""]
    lines.append(
        "For each metric, the pruning level where the agency-minus-baseline gain (relative to baseline, "
        "positive = agency better) is largest among the levels where it is significant (Holm-adjusted Wilcoxon)."
    )
    lines.append("")
    by_series = _paired_by_series(stats)
    if not by_series:
        return lines + ["No baseline/agency pairs were found, so no level can be singled out.", ""]
    any_best = False
    for series, rows in by_series.items():
        table = []
        for name in _metrics_in(rows):
            candidates = [r for r in rows if r.metric == name]
            good = [r for r in candidates if r.significant(stats.alpha) and (r.gain or 0) > 0]
            if all(r.p_wilcoxon_holm is None for r in candidates):
                table.append([metric(name).label, f"not tested ({candidates[0].test.note})", "—", "—"])
            elif good:
                any_best = True
                best = max(
                    good, key=lambda r: r.relative_gain if r.relative_gain is not None else r.gain or 0
                )
                table.append(
                    [
                        metric(name).label,
                        level(best.point.pruning_level),
                        percent(best.relative_gain),
                        pval(best.p_wilcoxon_holm),
                    ]
                )
            else:
                table.append(
                    [metric(name).label, f"none ({NO_DIFF} in agency's favour at any level)", "—", "—"]
                )
        lines.append(f"**{series.label()}**")
        lines.append("")
        lines += _table(["metric", "best level", "relative gain", "Holm p"], table)
    if any_best:
        lines.append(
            "**Answer:** the levels above are where agency's significant gain peaks for each metric."
        )
    else:
        lines.append(f"**Answer: none** — {NO_DIFF} in agency's favour at any pruning level for any metric.")
    return lines + [""]


def _temperature(stats: Statistics) -> list[str]:
    lines = ["## 3. How does temperature affect pruned models?", ""]
    temperatures = sorted({c.cell.temperature for c in stats.cells})
    if not temperatures:
        return lines + ["No records were loaded, so no temperature can be compared.", ""]
    if len(temperatures) < 2:
        return lines + [
            f"Only one temperature ({temperatures[0]:g}) was run, so no cross-temperature "
            "comparison is possible.",
            "",
        ]
    table = []
    for row in stats.slopes:
        if (
            row.metric not in ("reference_perplexity", "tokens_per_second", "distinct_2")
            or row.baseline is None
        ):
            continue
        agency_slope = (
            f"{num(row.agency.slope)} {interval(row.agency.ci_low, row.agency.ci_high)}"
            if row.agency
            else "—"
        )
        table.append(
            [
                row.series.label(),
                metric(row.metric).label,
                f"{num(row.baseline.slope)} {interval(row.baseline.ci_low, row.baseline.ci_high)}",
                agency_slope,
            ]
        )
    lines.append("Degradation per percentage point of pruning at each temperature:")
    lines.append("")
    lines += _table(["series", "metric", "baseline slope", "agency slope"], table)
    counts = []
    for t in temperatures:
        rows = [r for r in stats.paired if r.point.temperature == t]
        better = sum(r.significant(stats.alpha) and (r.gain or 0) > 0 for r in rows)
        worse = sum(r.significant(stats.alpha) and (r.gain or 0) < 0 for r in rows)
        counts.append([f"{t:g}", str(len(rows)), str(better), str(worse), str(len(rows) - better - worse)])
    if stats.paired:
        lines.append("Paired agency-minus-baseline tests per temperature (Holm-adjusted Wilcoxon):")
        lines.append("")
        lines += _table(["temperature", "tests", "agency better", "agency worse", NO_DIFF], counts)
    significant = [r for r in stats.temperature if r.significant(stats.alpha)]
    if not stats.temperature:
        lines.append(
            "No metric has paired differences at two or more temperatures, so the agency effect "
            "cannot be compared across temperatures."
        )
    elif not significant:
        lines.append(
            f"**Answer:** {NO_DIFF} in the agency effect between temperatures "
            f"({len(stats.temperature)} Kruskal-Wallis tests, smallest Holm p = "
            f"{pval(min((r.p_holm for r in stats.temperature if r.p_holm is not None), default=None))})."
        )
    else:
        lines.append("**Answer:** the agency effect differs significantly between temperatures for:")
        lines.append("")
        for r in significant:
            means = ", ".join(
                f"T={t:g}: {num(m)}" for t, m in zip(r.temperatures, r.mean_differences, strict=True)
            )
            lines.append(
                f"- {r.model} / {r.pruning_method} / {level(r.pruning_level)} / "
                f"{metric(r.metric).label}: mean differences {means}; Holm p = {pval(r.p_holm)}"
            )
    return lines + [""]


def _gain_text(row: PairedRow) -> str:
    tested = f"Holm p {pval(row.p_wilcoxon_holm)}" if row.p_wilcoxon_holm is not None else "not tested"
    return f"{percent(row.relative_gain)} ({tested})"


def _high_pruning(stats: Statistics) -> list[str]:
    lines = ["## 4. Is agency more beneficial at high pruning levels?", ""]
    by_series = _paired_by_series(stats)
    if not by_series:
        return lines + [
            "No baseline/agency pairs were found, so gains at high pruning cannot be compared.",
            "",
        ]
    larger = 0
    for series, rows in by_series.items():
        levels = sorted({r.point.pruning_level for r in rows})
        if len(levels) < 2:
            lines.append(f"**{series.label()}**: only one pruning level, nothing to compare.")
            lines.append("")
            continue
        low, high = levels[0], levels[-1]
        table = []
        for name in _metrics_in(rows):
            at = {r.point.pruning_level: r for r in rows if r.metric == name}
            if low not in at or high not in at:
                continue
            lo, hi = at[low], at[high]
            verdict = _paired_verdict(hi, stats.alpha)
            if verdict == "agency better":
                bigger = (hi.relative_gain or 0) > (lo.relative_gain or 0)
                reading = "significant gain at the highest level" + (
                    ", larger than at the lowest" if bigger else ""
                )
                larger += bigger
            elif verdict == "agency worse":
                reading = "agency significantly worse at the highest level"
            elif verdict == NO_DIFF:
                reading = f"{NO_DIFF} at the highest level"
            else:
                reading = verdict
            table.append([metric(name).label, _gain_text(lo), _gain_text(hi), reading])
        lines.append(
            f"**{series.label()}** (lowest {level(low)}, highest {level(high)}; relative gain, + = agency better)"
        )
        lines.append("")
        lines += _table(["metric", f"gain at {level(low)}", f"gain at {level(high)}", "reading"], table)
    if larger:
        lines.append(
            f"**Answer:** in {larger} metric/series combinations the agency gain is significant at the "
            "highest level and larger than at the lowest (the change between levels is not itself tested)."
        )
    else:
        lines.append(
            f"**Answer:** no metric shows a significant agency gain at the highest level that exceeds the "
            f"gain at the lowest level; where marked, {NO_DIFF}."
        )
    return lines + [""]


def _quality(stats: Statistics) -> list[str]:
    lines = ["## 5. Which quality metrics benefit most?", ""]
    rows = [r for r in stats.paired if r.metric in QUALITY_METRIC_NAMES]
    if not rows:
        return lines + ["No paired quality measurements were found, so no quality metric can be ranked.", ""]
    table = []
    ranking = []
    for name in QUALITY_METRIC_NAMES:
        mine = [r for r in rows if r.metric == name]
        if not mine:
            continue
        better = [r for r in mine if r.significant(stats.alpha) and (r.gain or 0) > 0]
        worse = [r for r in mine if r.significant(stats.alpha) and (r.gain or 0) < 0]
        tested = sum(r.p_wilcoxon_holm is not None for r in mine)
        gains = [r.relative_gain for r in mine if r.relative_gain is not None]
        mean_gain = sum(gains) / len(gains) if gains else None
        ranking.append((len(better), mean_gain if mean_gain is not None else float("-inf"), name))
        table.append(
            [
                metric(name).axis_label,
                str(len(mine)),
                str(tested),
                str(len(better)),
                str(len(worse)),
                percent(mean_gain),
            ]
        )
    lines += _table(
        ["metric", "points", "points tested", "agency better", "agency worse", "mean relative gain"], table
    )
    ranking.sort(reverse=True)
    winners = [name for count, _, name in ranking if count > 0]
    if winners:
        ordered = ", ".join(f"{metric(n).label} ({c} points)" for c, _, n in ranking if c > 0)
        lines.append(f"**Answer:** ordered by the number of significant gains: {ordered}.")
    else:
        lines.append(f"**Answer:** no quality metric benefits: {NO_DIFF} in agency's favour for any of them.")
    return lines + [""]


def _agency_behaviour(stats: Statistics) -> list[str]:
    lines = ["## Agency layer behaviour", ""]
    reports = [c for c in stats.cells if c.agency is not None]
    if not reports:
        return lines + ["No agency reports were loaded.", ""]
    totals: dict[str, int] = defaultdict(int)
    for c in reports:
        for kind, count in c.agency.violations.items():
            totals[kind] += count
    violations = ", ".join(f"{k}: {v}" for k, v in sorted(totals.items())) or "none reported"
    lines.append(
        f"Consent violations summed over {sum(c.agency.n_records for c in reports)} agency records: "
        f"{violations}."
    )
    return lines + [""]


def _cell_table(stats: Statistics) -> list[str]:
    lines = ["## Cell means ± 95% CI", ""]
    lines.append(
        "± is the half-width of the 95% t-interval over the pooled samples (or records, for corpus "
        "perplexity); '(n=1)' means a single value, which has no interval."
    )
    lines.append("")
    present = [m for m in TABLE_METRICS if any(m in c.sample or m in c.condition for c in stats.cells)]
    rows = []
    for c in stats.cells:
        row = [
            c.cell.model,
            c.cell.pruning_method,
            f"{c.cell.temperature:g}",
            level(c.cell.pruning_level),
            c.cell.arm,
            str(c.n_records),
        ]
        for name in present:
            d = c.sample.get(name) or c.condition.get(name)
            if d is None or d.mean is None:
                row.append("—")
            elif d.half_width is None:
                row.append(f"{num(d.mean)} (n={d.n})")
            else:
                row.append(f"{num(d.mean)} ± {num(d.half_width, 3)}")
        rows.append(row)
    header = ["model", "method", "T", "level", "arm", "records", *(ALL_METRICS[m].label for m in present)]
    return lines + _table(header, rows)


def render_summary(
    stats: Statistics, n_records: int, problems: list[str], skipped: list[str] | None = None
) -> str:
    """The whole ``summary.md`` as one string."""
    n_tests = sum(r.p_wilcoxon_holm is not None for r in stats.paired)
    lines = ["# Pruning comparison with agency: summary", ""]
    lines.append(
        f"{n_records} records in {len(stats.cells)} cells. A difference is called significant when its "
        f"Holm-adjusted p < {stats.alpha:g}; paired comparisons use the Wilcoxon signed-rank test over "
        f"(prompt, iteration) pairs, Holm-adjusted over all {n_tests} paired tests. Otherwise the text says "
        f'"{NO_DIFF}".'
    )
    lines.append("")
    for section in (
        _resilience,
        _optimal_level,
        _temperature,
        _high_pruning,
        _quality,
        _agency_behaviour,
        _cell_table,
    ):
        lines += section(stats)
    lines.append("## Problems with the inputs")
    lines.append("")
    lines += [f"- {p}" for p in problems] or ["None: every record file was read and used."]
    if skipped:
        lines += ["", "## Figures not drawn", "", *(f"- {note}" for note in skipped)]
    return "\n".join(lines) + "\n"


def write_summary(
    stats: Statistics, n_records: int, problems: list[str], path: Path, skipped: list[str] | None = None
) -> Path:
    path.write_text(render_summary(stats, n_records, problems, skipped), encoding="utf-8")
    return path
