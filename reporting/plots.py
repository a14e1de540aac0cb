"""The report's figures (matplotlib, Agg backend, PNG), drawn from the statistics.

One function per figure; ``make_plots`` runs them all and turns a figure
whose data are absent (no agency arm, no unpruned baseline, a metric never
measured) into a logged note instead of an error. matplotlib is imported
inside the functions so that importing the report does not pay for it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reporting.cells import Cell, Point, Record, Series
from reporting.format import level, slug
from reporting.metrics import metric
from reporting.plot_data import PlotData, Skip
from reporting.statistics import Statistics

log = logging.getLogger(__name__)

ARM_STYLE = {False: {"color": "#4c72b0", "label": "baseline"}, True: {"color": "#dd8452", "label": "agency"}}
LEVEL_METRICS = (
    "tokens_per_second",
    "first_token_latency_s",
    "reference_perplexity",
    "corpus_perplexity",
    "distinct_2",
    "repetition_rate",
)
GAIN_METRICS = (
    "tokens_per_second",
    "first_token_latency_s",
    "reference_perplexity",
    "corpus_perplexity",
    "distinct_2",
    "repetition_rate",
)
TEMPERATURE_STYLES = ("-", "--", ":", "-.")
HEATMAP_MIN_RANGE = 5.0  # percent
GAIN_COLORS = ("#55a868", "#c44e52", "#8172b2", "#937860")


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


def _draw_arms(
    ax: Any, data: PlotData, series: Series, name: str, linestyle: Any = "-", tag: str = ""
) -> bool:
    """Both arms' means with 95% CI error bars; arms are nudged apart so their bars do not overlap."""
    levels = data.levels(series)
    nudge = 0.008 * (max(levels) - min(levels) or 1)
    drew = False
    for agency in (False, True):
        line = data.arm_line(series, agency, name)
        if line is None:
            continue
        xs = [x + (nudge if agency else -nudge) for x in line.levels]
        style = ARM_STYLE[agency]
        ax.errorbar(
            xs,
            line.means,
            yerr=[line.lower, line.upper],
            color=style["color"],
            linestyle=linestyle,
            marker="o",
            markersize=4,
            capsize=3,
            label=style["label"] + tag,
        )
        drew = True
    return drew


def metrics_vs_level(data: PlotData, series: Series, out: Path) -> Path:
    plt = _pyplot()
    names = [*LEVEL_METRICS, data.memory_metric(series)]
    fig, axes = plt.subplots(2, 4, figsize=(17, 7.5))
    for ax, name in zip(axes.flat, names, strict=False):
        if name is None or not _draw_arms(ax, data, series, name):
            ax.set_title("memory" if name is None else metric(name).label)
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes, color="grey")
            continue
        ax.set_title(metric(name).axis_label, fontsize=10)
        ax.set_xlabel("pruning level (%)")
        ax.grid(alpha=0.3)
    legend_ax = axes.flat[-1]
    legend_ax.set_axis_off()
    handles = [plt.Line2D([], [], color=s["color"], marker="o", label=s["label"]) for s in ARM_STYLE.values()]
    legend_ax.legend(handles=handles, loc="upper left", frameon=False)
    legend_ax.text(
        0,
        0.45,
        "points: mean over pooled samples\n(corpus perplexity and memory:\nover records)\n"
        "bars: 95% t-interval;\nno bar when n = 1",
        transform=legend_ax.transAxes,
        va="top",
        fontsize=9,
    )
    fig.suptitle(f"Metrics vs pruning level — {series.label()}")
    fig.tight_layout()
    name = f"metrics_vs_level_{slug(series.model)}_{slug(series.pruning_method)}_T{series.temperature:g}.png"
    return _save(fig, out / name)


def gain_heatmap(data: PlotData, model: str, method: str, out: Path) -> Path:
    if not data.has_pairs(model, method):
        raise Skip(f"heatmap for {model}/{method}: no baseline/agency pairs")
    plt = _pyplot()
    temps, levels = data.temperatures(model, method), data.levels()
    names = [
        n
        for n in GAIN_METRICS
        if any(data.paired(Point(model, method, t, lv), n) for t in temps for lv in levels)
    ]
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(4.8 * cols, 1.2 + 1.1 * len(temps) * rows + 1.2 * rows), squeeze=False
    )
    for ax in axes.flat[len(names) :]:
        ax.set_axis_off()
    for ax, name in zip(axes.flat, names, strict=False):
        sign = metric(name).sign
        shown = [[float("nan")] * len(levels) for _ in temps]
        for i, t in enumerate(temps):
            for j, lv in enumerate(levels):
                row = data.paired(Point(model, method, t, lv), name)
                if row is None or row.relative_gain is None:
                    continue
                shown[i][j] = row.relative_gain * sign * 100  # literal (agency - baseline) / baseline in %
        finite = [abs(v) for r in shown for v in r if not math.isnan(v)]
        vmax = max(
            [HEATMAP_MIN_RANGE, *finite]
        )  # a floor, so that noise of a few tenths of a percent stays pale
        for i, t in enumerate(temps):
            for j, lv in enumerate(levels):
                if math.isnan(shown[i][j]):
                    continue
                star = (
                    "*"
                    if data.paired(Point(model, method, t, lv), name).significant(data.stats.alpha)
                    else ""
                )
                color = "white" if abs(shown[i][j]) > 0.6 * vmax else "black"
                ax.text(j, i, f"{shown[i][j]:+.1f}%{star}", ha="center", va="center", fontsize=8, color=color)
        image = ax.imshow(shown, cmap="RdBu" if sign > 0 else "RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto")
        ax.set_xticks(range(len(levels)), [level(lv) for lv in levels])
        ax.set_yticks(range(len(temps)), [f"T={t:g}" for t in temps])
        ax.set_title(metric(name).axis_label, fontsize=10)
        fig.colorbar(image, ax=ax, label="(agency − baseline) / baseline, %", shrink=0.9)
    fig.suptitle(
        f"Agency minus baseline — {model} / {method}\nblue = agency better, red = worse; "
        f"* = significant (Holm-adjusted Wilcoxon p < 0.05); colour scale at least ±{HEATMAP_MIN_RANGE:g}%",
        fontsize=11,
    )
    fig.tight_layout()
    return _save(fig, out / f"heatmap_{slug(model)}_{slug(method)}.png")


def radar(data: PlotData, series: Series, out: Path) -> Path:
    levels = data.levels(series)
    if 0.0 not in levels or len(levels) < 2:
        raise Skip(f"radar for {series.label()}: needs an unpruned (0%) level and a higher one")
    high = levels[-1]
    names = [*LEVEL_METRICS, data.memory_metric(series)]
    reference = Cell(series.model, series.pruning_method, series.temperature, 0.0, False)
    axes_names, values = [], {False: [], True: []}
    for name in names:
        ref = data.description(reference, name) if name else None
        if ref is None or ref.mean <= 0:
            continue
        ratios = {}
        for agency in (False, True):
            d = data.description(
                Cell(series.model, series.pruning_method, series.temperature, high, agency), name
            )
            if d is not None and d.mean > 0:
                ratios[agency] = d.mean / ref.mean if metric(name).higher_is_better else ref.mean / d.mean
        if False not in ratios:
            continue
        axes_names.append(name)
        for agency in (False, True):
            values[agency].append(ratios.get(agency, float("nan")))
    if len(axes_names) < 3:
        raise Skip(f"radar for {series.label()}: fewer than 3 metrics measured at 0% and {level(high)}")
    plt = _pyplot()
    angles = [2 * math.pi * i / len(axes_names) for i in range(len(axes_names))]
    fig = plt.figure(figsize=(7.5, 7.8))
    ax = fig.add_subplot(projection="polar")
    closed = [*angles, angles[0]]
    ax.plot(closed, [1.0] * len(closed), color="grey", linestyle="--", label="unpruned baseline = 1")
    for agency in (False, True):
        if all(math.isnan(v) for v in values[agency]):
            continue
        style = ARM_STYLE[agency]
        ring = [*values[agency], values[agency][0]]
        ax.plot(closed, ring, color=style["color"], marker="o", label=f"{style['label']} at {level(high)}")
        ax.fill(closed, ring, color=style["color"], alpha=0.15)
    ax.set_xticks(angles, [metric(n).label for n in axes_names], fontsize=9)
    ax.tick_params(axis="x", pad=14)
    ax.set_rlabel_position(math.degrees(angles[1] / 2) if len(angles) > 1 else 0)
    ax.tick_params(axis="y", labelsize=7, labelcolor="grey")
    ax.set_ylim(0, 1.1 * max([1.0, *(v for vs in values.values() for v in vs if not math.isnan(v))]))
    ax.set_title(f"{series.label()}: {level(high)} pruning vs unpruned baseline", pad=28)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3, fontsize=9, frameon=False)
    fig.text(
        0.5,
        -0.03,
        "Each axis: cell mean / mean of the unpruned (0%) baseline.\n"
        "Lower-is-better metrics are inverted (baseline / value), so outward = better.",
        ha="center",
        fontsize=9,
    )
    return _save(
        fig, out / f"radar_{slug(series.model)}_{slug(series.pruning_method)}_T{series.temperature:g}.png"
    )


def _temperature_linestyle(index: int) -> Any:
    """A distinct line style per temperature: the named ones first, then longer and longer dashes."""
    if index < len(TEMPERATURE_STYLES):
        return TEMPERATURE_STYLES[index]
    return (0, (index + 2, 2, 1, 2))


def _temperature_handles(plt: Any, temps: list[float]) -> list[Any]:
    return [
        plt.Line2D([], [], color="grey", linestyle=_temperature_linestyle(i), label=f"T={t:g}")
        for i, t in enumerate(temps)
    ]


def _gain_lines(ax: Any, data: PlotData, model: str, method: str, names: tuple[str, ...]) -> None:
    colors = GAIN_COLORS
    for k, name in enumerate(names):
        for i, t in enumerate(data.temperatures(model, method)):
            linestyle = _temperature_linestyle(i)
            rows = [data.paired(Point(model, method, t, lv), name) for lv in data.levels()]
            rows = [r for r in rows if r is not None and r.relative_gain is not None]
            if not rows:
                continue
            xs = [r.point.pruning_level for r in rows]
            ys = [100 * r.relative_gain for r in rows]
            ax.plot(
                xs,
                ys,
                color=colors[k % len(colors)],
                linestyle=linestyle,
                label=f"{metric(name).label}, T={t:g}",
            )
            sig = [(x, y) for x, y, r in zip(xs, ys, rows, strict=True) if r.significant(data.stats.alpha)]
            ax.scatter(xs, ys, facecolors="none", edgecolors=colors[k % len(colors)], zorder=3)
            if sig:
                ax.scatter(*zip(*sig, strict=True), color=colors[k % len(colors)], zorder=4)
    ax.axhline(0, color="black", linewidth=0.8)


def comprehensive(data: PlotData, model: str, method: str, out: Path) -> Path:
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(13, 9.5))
    temps = data.temperatures(model, method)
    for ax, name in zip(axes.flat, ("reference_perplexity", "tokens_per_second", "distinct_2"), strict=False):
        drew = False
        for i, t in enumerate(temps):
            drew |= _draw_arms(
                ax, data, Series(model, method, t), name, _temperature_linestyle(i), tag=f", T={t:g}"
            )
        ax.set_title(metric(name).axis_label)
        ax.set_xlabel("pruning level (%)")
        ax.grid(alpha=0.3)
        if drew:
            arms = [
                plt.Line2D([], [], color=s["color"], marker="o", label=s["label"]) for s in ARM_STYLE.values()
            ]
            ax.legend(handles=arms + _temperature_handles(plt, temps), fontsize=8)
        else:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes, color="grey")
    ax = axes.flat[3]
    ax.set_title("agency vs baseline (%; + = agency better)")
    ax.set_xlabel("pruning level (%)")
    if data.has_pairs(model, method):
        names = ("reference_perplexity", "tokens_per_second", "distinct_2")
        _gain_lines(ax, data, model, method, names)
        handles = [
            plt.Line2D([], [], color=GAIN_COLORS[k], label=metric(n).label) for k, n in enumerate(names)
        ]
        ax.legend(
            handles=handles + _temperature_handles(plt, temps),
            fontsize=8,
            title="filled marker = significant (Holm)",
            title_fontsize=8,
        )
        ax.grid(alpha=0.3)
    else:
        ax.text(
            0.5,
            0.5,
            "no agency arm: no paired differences",
            ha="center",
            va="center",
            transform=ax.transAxes,
            color="grey",
        )
    fig.suptitle(f"Summary — {model} / {method} (error bars: 95% CI)")
    fig.tight_layout()
    return _save(fig, out / f"summary_{slug(model)}_{slug(method)}.png")


def tradeoff(data: PlotData, model: str, method: str, out: Path) -> Path:
    temps = data.temperatures(model, method)
    if not any(
        data.has_metric("tokens_per_second", Series(model, method, t))
        and data.has_metric("reference_perplexity", Series(model, method, t))
        for t in temps
    ):
        raise Skip(f"trade-off for {model}/{method}: tokens/s or reference perplexity not measured")
    plt = _pyplot()
    levels = data.levels()
    norm = plt.Normalize(min(levels), max(levels) or 1)
    fig, axes = plt.subplots(1, len(temps), figsize=(6 * len(temps), 5), squeeze=False)
    for ax, t in zip(axes.flat, temps, strict=True):
        for agency, marker in ((False, "o"), (True, "^")):
            for lv in levels:
                cell = Cell(model, method, t, lv, agency)
                x, y = (
                    data.description(cell, "tokens_per_second"),
                    data.description(cell, "reference_perplexity"),
                )
                if x is None or y is None:
                    continue
                ax.errorbar(
                    x.mean,
                    y.mean,
                    xerr=x.half_width or 0,
                    yerr=y.half_width or 0,
                    fmt="none",
                    ecolor="lightgrey",
                    zorder=1,
                )
                ax.scatter(
                    x.mean,
                    y.mean,
                    marker=marker,
                    color=plt.cm.viridis(norm(lv)),
                    s=60,
                    zorder=2,
                    edgecolors="black",
                    linewidths=0.5,
                )
                ax.annotate(
                    level(lv), (x.mean, y.mean), textcoords="offset points", xytext=(5, 4), fontsize=7
                )
        ax.set_title(f"T={t:g}")
        ax.set_xlabel(metric("tokens_per_second").axis_label)
        ax.set_ylabel(metric("reference_perplexity").axis_label)
        ax.grid(alpha=0.3)
    handles = [
        plt.Line2D([], [], marker=m, linestyle="", color="grey", label=lab)
        for m, lab in (("o", "baseline"), ("^", "agency"))
    ]
    axes.flat[0].legend(handles=handles, fontsize=8, loc="best")
    fig.colorbar(
        plt.cm.ScalarMappable(norm=norm, cmap="viridis"), ax=axes.ravel().tolist(), label="pruning level (%)"
    )
    fig.suptitle(f"Quality vs speed — {model} / {method} (better = lower right)")
    return _save(fig, out / f"tradeoff_{slug(model)}_{slug(method)}.png")


def improvement_bars(data: PlotData, model: str, method: str, out: Path) -> Path:
    if not data.has_pairs(model, method):
        raise Skip(f"relative improvement for {model}/{method}: no baseline/agency pairs")
    plt = _pyplot()
    temps, levels = data.temperatures(model, method), data.levels()
    names = [
        n
        for n in GAIN_METRICS
        if any(data.paired(Point(model, method, t, lv), n) for t in temps for lv in levels)
    ]
    width = 0.8 / len(names)
    fig, axes = plt.subplots(
        len(temps),
        1,
        figsize=(max(8, 2.2 * len(levels)), 3.6 * len(temps) + 1),
        squeeze=False,
        layout="constrained",
    )
    colors = plt.cm.tab10.colors
    for ax, t in zip(axes.flat, temps, strict=True):
        for k, name in enumerate(names):
            for j, lv in enumerate(levels):
                row = data.paired(Point(model, method, t, lv), name)
                if row is None or row.relative_gain is None:
                    continue
                y = 100 * row.relative_gain
                err = (
                    [[y - 100 * row.relative_gain_ci[0]], [100 * row.relative_gain_ci[1] - y]]
                    if row.relative_gain_ci
                    else None
                )
                x = j - 0.4 + width * (k + 0.5)
                ax.bar(
                    x,
                    y,
                    width,
                    color=colors[k % 10],
                    yerr=err,
                    capsize=2,
                    error_kw={"elinewidth": 0.8},
                    label=metric(name).label if j == 0 else None,
                )
                if row.significant(data.stats.alpha):
                    tip = y + err[1][0] if err and y >= 0 else y - err[0][0] if err else y
                    ax.annotate("*", (x, tip), ha="center", va="bottom" if y >= 0 else "top", fontsize=12)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(levels)), [level(lv) for lv in levels])
        ax.set_xlabel("pruning level")
        ax.set_ylabel("agency vs baseline (%)\n+ = agency better")
        ax.set_title(f"T={t:g}")
        ax.grid(axis="y", alpha=0.3)
        ax.margins(y=0.12)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(6, len(names)), fontsize=8)
    fig.suptitle(
        f"Relative improvement of agency — {model} / {method}\n"
        "error bars: 95% CI of the paired difference / |baseline mean|; * = significant (Holm)"
    )
    return _save(fig, out / f"relative_improvement_{slug(model)}_{slug(method)}.png")


def make_plots(records: list[Record], stats: Statistics, out_dir: Path) -> PlotOutcome:
    """Draw every figure the data allow into ``out_dir``; figures without data become notes."""
    from reporting.headmaps import agency_state_map, head_pruning_map

    out_dir.mkdir(parents=True, exist_ok=True)
    data = PlotData(stats)
    outcome = PlotOutcome()
    jobs: list[Callable[[], Path]] = []
    for series in data.series():
        jobs.append(lambda s=series: metrics_vs_level(data, s, out_dir))
        jobs.append(lambda s=series: radar(data, s, out_dir))
    for model, method in data.model_methods():
        for figure in (gain_heatmap, comprehensive, tradeoff, improvement_bars):
            jobs.append(lambda f=figure, m=model, p=method: f(data, m, p, out_dir))
        jobs.append(lambda m=model, p=method: agency_state_map(records, m, p, out_dir))
    for model in sorted({m for m, _ in data.model_methods()}):
        jobs.append(lambda m=model: head_pruning_map(records, m, out_dir))
    for job in jobs:
        try:
            outcome.paths.append(job())
        except Skip as skip:
            note = f"plot skipped: {skip}"
            log.warning(note)
            outcome.notes.append(note)
    if not data.series():
        outcome.notes.append("plot skipped: no records, nothing to draw")
    return outcome
