"""Layer x head maps: which heads are pruned, and which state the agency layer left them in.

These read the records directly (``pruning.heads``, ``model``,
``agency.state_map``) because they show *where* in the model things happen,
which no per-cell statistic summarises.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from record.agency_states import STATE_COLOURS
from reporting.design import Design, Series
from reporting.format import level, slug
from reporting.plot_data import Skip

KNOWN_STATE_COLORS = {**STATE_COLOURS, "pruned": "#c44e52"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grid(rows: int, cols: int, layers: int, heads: int) -> tuple[Any, Any]:
    plt = _pyplot()
    panel_w = min(3.0, max(1.6, 0.22 * heads + 0.6))
    panel_h = min(3.0, max(1.4, 0.16 * layers + 0.7))
    return plt.subplots(
        rows, cols, figsize=(panel_w * cols + 1.6, panel_h * rows + 1.4), squeeze=False, layout="constrained"
    )


def _label_edges(axes: Any, layers: int, heads: int) -> None:
    for ax in axes.flat:
        ax.set_xticks(range(0, heads, max(1, heads // 6)))
        ax.set_yticks(range(0, layers, max(1, layers // 6)))
    for ax in axes[-1, :]:
        ax.set_xlabel("head", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("layer", fontsize=8)
    for ax in axes.flat:
        ax.tick_params(labelsize=6)


def head_pruning_map(design: Design, series: Series, out: Path) -> Path:
    """Fraction of baseline records (all temperatures and seeds) that prune each head, per level."""
    cells = {
        cell: members
        for cell, members in design.cells.items()
        if cell.series == series and not cell.arm.agency
    }
    shapes = [
        r.model
        for members in cells.values()
        for r in members
        if r.model is not None and r.pruning is not None
    ]
    if not shapes:
        raise Skip(f"head pruning map for {series.label()}: no baseline record with its pruned heads")
    layers, heads = shapes[0].layers, shapes[0].heads
    levels = sorted({cell.level for cell in cells})
    fig, axes = _grid(1, len(levels), layers, heads)
    image = None
    for j, lvl in enumerate(levels):
        chosen = [
            r.pruning for cell, members in cells.items() if cell.level == lvl for r in members if r.pruning
        ]
        counts = [[0.0] * heads for _ in range(layers)]
        for pruning in chosen:
            for layer, head in pruning.heads:
                counts[layer][head] += 1 / len(chosen)
        image = axes[0, j].imshow(counts, cmap="Reds", vmin=0, vmax=1, aspect="auto", origin="upper")
        axes[0, j].set_title(f"{level(lvl)}, n={len(chosen)}", fontsize=8)
    _label_edges(axes, layers, heads)
    if image is not None:
        fig.colorbar(
            image, ax=axes.ravel().tolist(), label="fraction of records pruning the head", shrink=0.8
        )
    fig.suptitle(f"Pruned heads (baseline arm) — {series.label()} (layers x heads)")
    fig.savefig(path := out / f"head_pruning_{slug(series.label())}.png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def agency_state_map(design: Design, series: Series, out: Path) -> Path:
    """The most common end-of-generation state of each head over a main agency cell's records."""
    cells = {
        cell: [r for r in members if r.agency is not None and r.agency.state_map]
        for cell, members in design.cells.items()
        if cell.series == series and cell.arm.agency and cell.arm.main
    }
    cells = {cell: members for cell, members in cells.items() if members}
    if not cells:
        raise Skip(f"agency state map for {series.label()}: no agency record has a state map")
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.patches import Patch

    records = [r for members in cells.values() for r in members]
    maps = [r.agency.state_map for r in records if r.agency is not None]
    layers = max(len(m) for m in maps)
    heads = max(len(row) for m in maps for row in m)
    states = sorted(
        {s for m in maps for row in m for s in row}
        | ({"pruned"} if any(r.pruning and r.pruning.heads for r in records) else set())
    )
    spare = iter(_pyplot().cm.tab10.colors)
    colors = [KNOWN_STATE_COLORS.get(s) or next(spare) for s in states]
    code = {s: k for k, s in enumerate(states)}
    cmap = ListedColormap(colors).with_extremes(bad="white")
    norm = BoundaryNorm([k - 0.5 for k in range(len(states) + 1)], len(states))
    temps = sorted({cell.temperature for cell in cells})
    levels = sorted({cell.level for cell in cells})
    fig, axes = _grid(len(temps), len(levels), layers, heads)
    for i, t in enumerate(temps):
        for j, lvl in enumerate(levels):
            here = [
                r
                for cell, members in cells.items()
                if (cell.temperature, cell.level) == (t, lvl)
                for r in members
            ]
            if not here:
                axes[i, j].set_axis_off()
                continue
            grid = _mode_states([r.agency.state_map for r in here if r.agency is not None], layers, heads)
            for layer, head in here[0].pruning.heads if here[0].pruning else []:
                grid[layer][head] = "pruned"
            codes = [[float("nan") if s is None else code[s] for s in row] for row in grid]
            axes[i, j].imshow(codes, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
            axes[i, j].set_title(f"T={t:g}, {level(lvl)}\nn={len(here)}", fontsize=8)
    _label_edges(axes, layers, heads)
    fig.legend(
        handles=[Patch(color=c, label=s) for s, c in zip(states, colors, strict=True)],
        loc="outside right center",
        title="head state",
        fontsize=8,
    )
    fig.suptitle(
        f"Agency head states at the end of generation — {series.label()}\n"
        "(most common state over the cell's records and rows)"
    )
    fig.savefig(path := out / f"agency_states_{slug(series.label())}.png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def _mode_states(maps: list[list[list[str]]], layers: int, heads: int) -> list[list[str | None]]:
    grid: list[list[str | None]] = [[None] * heads for _ in range(layers)]
    for layer in range(layers):
        for head in range(heads):
            seen = Counter(m[layer][head] for m in maps if layer < len(m) and head < len(m[layer]))
            grid[layer][head] = seen.most_common(1)[0][0] if seen else None
    return grid
