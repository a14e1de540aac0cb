"""The report's figures (matplotlib, Agg backend, PNG), drawn from the statistics.

One function per figure; ``make_plots`` runs them all and turns a figure
whose data are absent into a note instead of an error. Perplexity axes are
logarithmic; speed error bars are 95% intervals over timing sessions; which
metrics appear is chosen by the catalogue's ``views``. matplotlib is imported
inside the functions, so importing the report does not pay for it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from record.catalogue import CATALOGUE, spec
from reporting.analyses.registry import QUESTIONS
from reporting.comparison import Comparison, shown
from reporting.design import Arm, Cell, Design, Series
from reporting.format import level, slug
from reporting.plot_data import PlotData, Skip
from reporting.results import Statistics
from reporting.units import BASELINE_ARM

log = logging.getLogger(__name__)

ARM_COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b2", "#937860", "#da8bc3", "#8c8c8c")
LINE_STYLES = ("-", "--", ":", "-.")
LEVEL_METRICS = [m.name for m in CATALOGUE if "level_plot" in m.views]
GAIN_METRICS = [m.name for m in CATALOGUE if "gain_plot" in m.views and m.tested]


@dataclass
class PlotOutcome:
    paths: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def _arm_color(arm: Arm, arms: list[Arm]) -> str:
    return ARM_COLORS[arms.index(arm) % len(ARM_COLORS)] if arm in arms else "grey"


def _log_scale(ax: Any, axis: str = "y") -> None:
    """A log axis whose labels are plain numbers (16, 18, 20; 0.3, 1, 3), not 1.6x10^1: speed and ratio axes
    often span less than a decade, where the default labels every tick in scientific notation."""
    from matplotlib.ticker import LogFormatter

    class PlainLogFormatter(LogFormatter):
        def __call__(self, x: float, pos: int | None = None) -> str:
            return f"{x:g}" if super().__call__(x, pos) else ""

    getattr(ax, f"set_{axis}scale")("log")
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(PlainLogFormatter())
    target.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False))


def _log_axis(ax: Any, name: str) -> None:
    if spec(name).scale == "log":
        _log_scale(ax)


def _draw_arms(ax: Any, data: PlotData, series: Series, name: str, temperatures: list[float]) -> bool:
    """Every main arm's means with 95% interval bars, one line style per temperature; arms nudged apart."""
    arms = data.arms(series)
    levels = data.levels(series)
    nudge = 0.008 * ((max(levels) - min(levels)) or 1)
    drew = False
    for t_index, temperature in enumerate(temperatures):
        for a_index, arm in enumerate(arms):
            line = data.arm_line(series, temperature, arm, name)
            if line is None:
                continue
            xs = [x + nudge * (a_index - (len(arms) - 1) / 2) for x in line.levels]
            ax.errorbar(
                xs,
                line.means,
                yerr=[line.lower, line.upper],
                color=_arm_color(arm, arms),
                linestyle=LINE_STYLES[t_index % len(LINE_STYLES)],
                marker="o",
                markersize=4,
                capsize=3,
                label=f"{arm.label}, T={temperature:g}",
            )
            drew = True
    if drew:
        _log_axis(ax, name)
    return drew


def metrics_vs_level(data: PlotData, series: Series, out: Path) -> Path:
    """Every metric against the pruning level, one line per arm and temperature, intervals shaded."""
    plt = _pyplot()
    names = [n for n in LEVEL_METRICS if data.has_metric(series, n)]
    if not names:
        raise Skip(f"metrics vs level for {series.label()}: no metric measured")
    cols = 3
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.4 * cols, 3.9 * rows), squeeze=False)
    temperatures = data.temperatures(series)
    for ax in axes.flat[len(names) :]:
        ax.set_axis_off()
    for ax, name in zip(axes.flat, names, strict=False):
        _draw_arms(ax, data, series, name, temperatures)
        ax.set_title(spec(name).axis_label, fontsize=9)
        ax.set_xlabel("pruning level (%)")
        ax.grid(alpha=0.3, which="both")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="lower center",
        ncol=min(4, len(labels)),
        fontsize=8,
        frameon=False,
        handlelength=3.5,
        bbox_to_anchor=(0.5, -0.02),
    )
    fig.suptitle(
        f"Metrics vs pruning level — {series.label()}\npoints: geometric means for perplexity and speed; "
        "bars: 95% intervals over prompts (samples), timing sessions (speed) or records",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _save(fig, out / f"metrics_vs_level_{slug(series.label())}.png")


def _forest(ax: Any, comparisons: list[Comparison], alpha: float, title: str, kind: str = "ratio") -> None:
    """Effects with 95% intervals, one row each: ratios on a log axis around 1, differences around 0."""
    rows = [c for c in comparisons if c.kind == kind and c.effect.estimate is not None]
    if not rows:
        ax.text(0.5, 0.5, "no comparison", ha="center", va="center", transform=ax.transAxes, color="grey")
        ax.set_axis_off()
        return
    labels = []
    for y, c in enumerate(rows):
        value = shown(c, c.effect.estimate)
        low, high = (shown(c, end) for end in c.interval())
        good = c.significant(alpha) and c.better()
        bad = c.significant(alpha) and not c.better()
        color = "#55a868" if good else "#c44e52" if bad else "#4c72b0"
        if low is not None:
            ax.plot([low, high], [y, y], color=color, linewidth=2)
        ax.plot([value], [y], "o", color=color, markerfacecolor=color if c.significant(alpha) else "white")
        where = f" {level(c.level)}" if c.level is not None and c.family in ("Q1", "Q2", "Q3") else ""
        labels.append(f"{c.family} {spec(c.metric).label}{where}")
    if kind == "ratio":
        ax.axvline(1.0, color="black", linewidth=0.8)
        _log_scale(ax, "x")
    else:
        ax.axvline(0.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, axis="x", which="both")


def summary_figure(data: PlotData, series: Series, out: Path) -> Path:
    """The curves a person checks first, and every primary answer of this series as an effect with its interval."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(13, 9.5))
    temperatures = data.temperatures(series)
    for ax, name in zip(
        axes.flat, ("reference_perplexity", "tokens_per_second", "corpus_perplexity"), strict=False
    ):
        if not _draw_arms(ax, data, series, name, temperatures):
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes, color="grey")
        ax.set_title(spec(name).axis_label, fontsize=10)
        ax.set_xlabel("pruning level (%)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, handlelength=3.5)  # long enough to show the dashes
    primary = [c for c in data.stats.comparisons if c.series == series and c.family in QUESTIONS]
    _forest(
        axes.flat[3],
        primary,
        data.stats.alpha,
        "answers: agency/baseline ratios with 95% intervals (filled: significant, Holm over the report's primary comparisons;\n"
        "green: agency better, red: worse; perplexity: < 1 better, tokens/s: > 1 better; Q1 slopes per 10 points)",
    )
    fig.suptitle(f"Summary — {series.label()}")
    fig.tight_layout()
    return _save(fig, out / f"summary_{slug(series.label())}.png")


def gain_heatmap(data: PlotData, series: Series, out: Path) -> Path:
    """The agency/baseline ratio per level and temperature for each metric, coloured by better or worse."""
    agency = next((a for a in data.arms(series) if a.agency), None)
    rows = [
        c
        for c in data.stats.family("exploratory")
        if c.series == series
        and c.arm == agency
        and c.metric in GAIN_METRICS
        and c.effect.estimate is not None
    ]
    if agency is None or not rows:
        raise Skip(f"heatmap for {series.label()}: no baseline/agency pairs")
    plt = _pyplot()
    temps, levels = data.temperatures(series), data.levels(series)
    names = [n for n in GAIN_METRICS if any(c.metric == n for c in rows)]
    cols = min(3, len(names))
    nrows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(
        nrows, cols, figsize=(4.8 * cols, 1.4 + 1.2 * len(temps) * nrows + 1.2 * nrows), squeeze=False
    )
    for ax in axes.flat[len(names) :]:
        ax.set_axis_off()
    for ax, name in zip(axes.flat, names, strict=False):
        grid = [[float("nan")] * len(levels) for _ in temps]
        stars = [[""] * len(levels) for _ in temps]
        for c in rows:
            value = shown(c, c.effect.estimate)
            if c.metric != name or value is None or c.temperature is None or c.level is None:
                continue
            i, j = temps.index(c.temperature), levels.index(c.level)
            grid[i][j] = 100 * (value - 1) if c.kind == "ratio" else value
            stars[i][j] = "*" if c.significant(data.stats.alpha) else ""
        finite = [abs(v) for r in grid for v in r if not math.isnan(v)]
        vmax = max([5.0 if spec(name).scale == "log" else 0.05, *finite])
        cmap = "RdBu" if spec(name).sign > 0 else "RdBu_r"
        image = ax.imshow(grid, cmap=cmap, vmin=-vmax, vmax=vmax, aspect="auto")
        for i in range(len(temps)):
            for j in range(len(levels)):
                if not math.isnan(grid[i][j]):
                    text = f"{grid[i][j]:+.1f}%" if spec(name).scale == "log" else f"{grid[i][j]:+.3f}"
                    ax.text(j, i, text + stars[i][j], ha="center", va="center", fontsize=8)
        ax.set_xticks(range(len(levels)), [level(lv) for lv in levels])
        ax.set_yticks(range(len(temps)), [f"T={t:g}" for t in temps])
        ax.set_title(spec(name).axis_label, fontsize=9)
        fig.colorbar(
            image,
            ax=ax,
            shrink=0.9,
            label="agency/baseline − 1 (%)" if spec(name).scale == "log" else "distance agency − baseline",
        )
    fig.suptitle(
        f"{agency.label} vs baseline — {series.label()}\nblue: agency better, red: worse; diversity as distance to "
        "the unpruned model; * significant (Holm within the exploratory family)",
        fontsize=10,
    )
    fig.tight_layout()
    return _save(fig, out / f"heatmap_{slug(series.label())}.png")


def radar(data: PlotData, series: Series, temperature: float, out: Path) -> Path:
    """Each arm's quality profile at its highest level against the unpruned model, per temperature."""
    levels = data.levels(series)
    if 0.0 not in levels or len(levels) < 2:
        raise Skip(
            f"radar for {series.label()} T={temperature:g}: needs an unpruned (0%) level and a higher one"
        )
    high = levels[-1]
    baseline = BASELINE_ARM
    arms = data.arms(series)
    names = [n for n in LEVEL_METRICS if spec(n).direction != "reference" and spec(n).kind != "memory"]
    axes_names: list[str] = []
    rings: dict[Arm, list[float]] = {arm: [] for arm in arms}
    for name in names:
        ref = data.description(Cell(series, temperature, 0.0, baseline), name)
        if ref is None or ref.mean is None or ref.mean <= 0:
            continue
        values = {}
        for arm in arms:
            d = data.description(Cell(series, temperature, high, arm), name)
            if d is not None and d.mean is not None and d.mean > 0:
                values[arm] = d.mean / ref.mean if spec(name).sign > 0 else ref.mean / d.mean
        if baseline not in values:
            continue
        axes_names.append(name)
        for arm in arms:
            rings[arm].append(values.get(arm, float("nan")))
    if len(axes_names) < 3:
        raise Skip(
            f"radar for {series.label()} T={temperature:g}: fewer than 3 metrics at 0% and {level(high)}"
        )
    plt = _pyplot()
    angles = [2 * math.pi * i / len(axes_names) for i in range(len(axes_names))]
    closed = [*angles, angles[0]]
    fig = plt.figure(figsize=(7.5, 7.8))
    ax = fig.add_subplot(projection="polar")
    ax.plot(closed, [1.0] * len(closed), color="grey", linestyle="--", label="unpruned baseline = 1")
    for arm in arms:
        ring = rings[arm]
        if all(math.isnan(v) for v in ring):
            continue
        ax.plot(
            closed,
            [*ring, ring[0]],
            color=_arm_color(arm, arms),
            marker="o",
            label=f"{arm.label} at {level(high)}",
        )
        ax.fill(closed, [*ring, ring[0]], color=_arm_color(arm, arms), alpha=0.12)
    ax.set_xticks(angles, [spec(n).label for n in axes_names], fontsize=9)
    ax.set_rscale("log")
    ax.set_title(f"{series.label()}, T={temperature:g}: {level(high)} pruning vs unpruned", pad=28)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3, fontsize=9, frameon=False)
    fig.text(
        0.5,
        -0.03,
        "Each axis: cell mean / unpruned baseline mean (log radius); lower-is-better metrics "
        "inverted, so outward is better.",
        ha="center",
        fontsize=9,
    )
    return _save(fig, out / f"radar_{slug(series.label())}_T{temperature:g}.png")


def tradeoff(data: PlotData, series: Series, out: Path) -> Path:
    """Speed against quality per arm and level: the trade-off question 2 answers, with each arm's front."""
    if not (data.has_metric(series, "tokens_per_second") and data.has_metric(series, "reference_perplexity")):
        raise Skip(f"trade-off for {series.label()}: tokens/s or reference perplexity not measured")
    plt = _pyplot()
    temps, levels, arms = data.temperatures(series), data.levels(series), data.arms(series)
    norm = plt.Normalize(min(levels), max(levels) or 1)
    fig, axes = plt.subplots(1, len(temps), figsize=(6 * len(temps), 5), squeeze=False)
    markers = ("o", "^", "s", "D", "v", "P")
    for ax, t in zip(axes.flat, temps, strict=True):
        for k, arm in enumerate(arms):
            usable = data.usable_levels(series, arm)
            for lv in levels:
                if usable is not None and lv not in usable:
                    continue  # beyond the quality bound: a broken model is no trade-off
                cell = Cell(series, t, lv, arm)
                x, y = (
                    data.description(cell, "tokens_per_second"),
                    data.description(cell, "reference_perplexity"),
                )
                if x is None or y is None:
                    continue
                ax.scatter(
                    x.mean,
                    y.mean,
                    marker=markers[k % len(markers)],
                    color=plt.cm.viridis(norm(lv)),
                    s=60,
                    edgecolors="black",
                    linewidths=0.5,
                    zorder=2,
                )
                ax.annotate(
                    level(lv), (x.mean, y.mean), textcoords="offset points", xytext=(5, 4), fontsize=7
                )
                if lv in data.front(series, arm)[0]:
                    ax.scatter(x.mean, y.mean, s=220, facecolors="none", edgecolors="crimson", linewidths=1.4)
        _log_scale(ax)
        ax.set_title(f"T={t:g}")
        ax.set_xlabel(spec("tokens_per_second").axis_label)
        ax.set_ylabel(spec("reference_perplexity").axis_label)
        ax.grid(alpha=0.3, which="both")
    handles = [
        plt.Line2D([], [], marker=markers[k % len(markers)], linestyle="", color="grey", label=arm.label)
        for k, arm in enumerate(arms)
    ]
    why_not = sorted(reason for arm in arms if (reason := data.front(series, arm)[1]) is not None)
    handles += [
        plt.Line2D(
            [],
            [],
            marker="o",
            linestyle="",
            markerfacecolor="none",
            markeredgecolor="crimson",
            markersize=11,
            label="Pareto front of its arm (temperatures pooled)",
        )
    ][: 0 if why_not else 1]
    fig.legend(  # below the axes: a legend inside them can cover a point
        handles=handles, fontsize=8, loc="upper center", bbox_to_anchor=(0.45, 0.0), ncol=min(3, len(handles))
    )
    fig.colorbar(
        plt.cm.ScalarMappable(norm=norm, cmap="viridis"), ax=axes.ravel().tolist(), label="pruning level (%)"
    )
    fig.suptitle(
        f"Quality vs speed — {series.label()} (better: lower right)"
        + (f"\nno Pareto front: {why_not[0].split(';')[0]}" if why_not else "")
    )
    return _save(fig, out / f"tradeoff_{slug(series.label())}.png")


def answers_figure(data: PlotData, out: Path) -> Path:
    """Every primary comparison of every question, grouped by question: the report's answers at a glance.

    Ratios (perplexity, speed) on a log axis around 1; differences (diversity as distance to the unpruned model,
    negative: closer) on their own axis around 0.
    """
    panels = [
        (q, kind)
        for q in QUESTIONS
        for kind in ("ratio", "difference")
        if any(c.kind == kind for c in data.stats.family(q))
    ]
    if not panels:
        raise Skip("answers: no primary comparison")
    plt = _pyplot()
    heights = [max(1.2, 0.32 * sum(c.kind == kind for c in data.stats.family(q))) for q, kind in panels]
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(9, sum(heights) + 1.5), squeeze=False, gridspec_kw={"height_ratios": heights}
    )
    for ax, (q, kind) in zip(axes.flat, panels, strict=True):
        suffix = "" if kind == "ratio" else " (differences: distance to the unpruned model)"
        _forest(ax, data.stats.family(q), data.stats.alpha, f"{q}. {QUESTIONS[q]}{suffix}", kind)
    fig.suptitle(
        "Primary answers: effect (agency/baseline, or agency - baseline) and 95% interval; filled = "
        "significant (Holm over every primary comparison of the report); green better, red worse",
        fontsize=9,
    )
    fig.tight_layout()
    return _save(fig, out / "answers.png")


def ablation_figure(data: PlotData, out: Path) -> Path:
    """The ablation's effects with their intervals, one row per component switched off."""
    rows = [c for c in data.stats.family("ablation") if c.kind == "ratio"]
    if not rows:
        raise Skip("ablation: no agency component was switched off")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.6))
    _forest(
        ax,
        rows,
        data.stats.alpha,
        "agency components: each row's arm vs the whole agency arm (first row: agency vs baseline)",
    )
    ax.set_yticks(
        range(len(rows)),
        [f"{c.arm.label} vs {c.other.label}: {spec(c.metric).label}" for c in rows],
        fontsize=7,
    )
    fig.tight_layout()
    return _save(fig, out / "ablation.png")


def recovery_figure(data: PlotData, series: Series, out: Path) -> Path:
    """Before (dashed) and after (solid) recovery, per arm, along the levels: quality lost and regained."""
    if not series.recovered():
        raise Skip(f"recovery for {series.label()}: not a recovered series")
    before = series.before_recovery()
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    arms = data.arms(before)
    for ax, name in zip(axes, ("reference_perplexity", "corpus_perplexity"), strict=True):
        for temperature in data.temperatures(series)[:1]:
            for arm in arms:
                for which, style in ((before, "--"), (series, "-")):
                    line = data.arm_line(which, temperature, arm, name)
                    if line is None:
                        continue
                    ax.errorbar(
                        line.levels,
                        line.means,
                        yerr=[line.lower, line.upper],
                        color=_arm_color(arm, arms),
                        linestyle=style,
                        marker="o",
                        markersize=4,
                        capsize=3,
                        label=f"{arm.label}, {'recovered' if which is series else 'before recovery'}",
                    )
        _log_scale(ax)
        ax.set_title(spec(name).axis_label, fontsize=10)
        ax.set_xlabel("pruning level (%)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, handlelength=3.5)
    fig.suptitle(
        f"Recovery after pruning — {before.label().replace(' / recovered=no', '')} "
        f"(T={data.temperatures(series)[0]:g}; dashed: before, solid: recovered)"
    )
    fig.tight_layout()
    return _save(fig, out / f"recovery_{slug(before.label())}.png")


def frontier_figure(data: PlotData, out: Path) -> Path:
    """Corpus perplexity against the level: one line per ranking (solid compensated, dashed zeroed), the random
    ranking's band, the agency arms as markers, the frontier arm ringed; the legend beside the axes, never on
    the points."""
    levels = data.stats.descriptions.get("frontier", [])
    if not levels:
        raise Skip("frontier: no ranking arms with calibration-text and evaluation scores")
    plt = _pyplot()
    models = sorted({fl.model for fl in levels})
    fig, axes = plt.subplots(1, len(models), figsize=(9 * len(models), 5.5), squeeze=False)
    for ax, model in zip(axes.flat, models, strict=True):
        rows = [fl for fl in levels if fl.model == model]
        methods = sorted({c.method for fl in rows for c in fl.candidates})
        colors = plt.cm.tab10.colors
        for k, method in enumerate(methods):
            for compensate, style in (("none", "--"), ("mean", "-")):
                points = [
                    (fl.level, c.corpus_perplexity)
                    for fl in rows
                    for c in fl.candidates
                    if c.method == method and c.compensate == compensate and c.corpus_perplexity
                ]
                if points:
                    x, y = zip(*points, strict=True)
                    kind = "compensated" if compensate == "mean" else "zeroed"
                    ax.plot(x, y, style, marker="o", ms=3, color=colors[k % 10], label=f"{method}, {kind}")
        for kind, shade in (("zeroed", "grey"), ("compensated", "tan")):
            band = [(fl.level, *fl.placebo[kind][:3]) for fl in rows if kind in fl.placebo]
            if band:
                x, median, low, high = zip(*band, strict=True)
                ax.fill_between(
                    x, low, high, color=shade, alpha=0.3, label=f"random ranking, {kind} (2.5-97.5%)"
                )
                ax.plot(x, median, ":", color=shade)
        labels = sorted({label for fl in rows for label in fl.agency})
        for k, label in enumerate(labels):
            points = [(fl.level, fl.agency[label]) for fl in rows if label in fl.agency]
            x, y = zip(*points, strict=True)
            ax.scatter(x, y, marker="^s*Dv"[k % 5], s=60, color="black", zorder=4, label=label)
        chosen = [
            (fl.level, fl.chosen.corpus_perplexity)
            for fl in rows
            if fl.chosen and fl.chosen.corpus_perplexity
        ]
        if chosen:
            x, y = zip(*chosen, strict=True)
            ax.scatter(
                x,
                y,
                s=200,
                facecolors="none",
                edgecolors="crimson",
                linewidths=1.4,
                zorder=5,
                label="frontier arm (chosen on calibration text)",
            )
        unpruned = next((fl.unpruned for fl in rows if fl.unpruned), None)
        if unpruned:
            ax.axhline(unpruned, color="black", lw=0.8, label=f"unpruned ({unpruned:.4g})")
        _log_scale(ax)
        ax.set_xlabel("pruning level (%)")
        ax.set_ylabel(spec("corpus_perplexity").axis_label)
        ax.set_title(model.rstrip("/").rsplit("/", 1)[-1])
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.suptitle("The frontier: corpus perplexity against the pruning level (better: lower)")
    fig.tight_layout()
    return _save(fig, out / "frontier.png")


def make_plots(design: Design, stats: Statistics, out_dir: Path) -> PlotOutcome:
    """Draw every figure the data allow into ``out_dir``; figures without data become notes."""
    from reporting.headmaps import agency_state_map, head_pruning_map

    out_dir.mkdir(parents=True, exist_ok=True)
    data = PlotData(stats)
    outcome = PlotOutcome()
    jobs: list[Callable[[], Path]] = [
        partial(answers_figure, data, out_dir),
        partial(ablation_figure, data, out_dir),
        partial(frontier_figure, data, out_dir),
    ]
    for series in data.series():
        jobs += [
            partial(summary_figure, data, series, out_dir),
            partial(metrics_vs_level, data, series, out_dir),
            partial(gain_heatmap, data, series, out_dir),
            partial(tradeoff, data, series, out_dir),
            partial(agency_state_map, design, series, out_dir),
            partial(head_pruning_map, design, series, out_dir),
        ]
        jobs += [partial(radar, data, series, t, out_dir) for t in data.temperatures(series)]
        if series.recovered():
            jobs.append(partial(recovery_figure, data, series, out_dir))
    for job in jobs:
        try:
            outcome.paths.append(job())
        except Skip as skip:
            outcome.notes.append(f"plot skipped: {skip}")
    return outcome
