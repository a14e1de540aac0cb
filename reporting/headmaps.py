"""Layer x head maps: which heads each method prunes, and which state the agency layer left them in.

These read the records directly (``pruned_heads``, ``model_shape``,
``agency.state_map``) because they show *where* in the model things happen,
which no per-cell statistic summarises.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from reporting.cells import Record, cell_of
from reporting.format import level, slug
from reporting.plot_data import Skip

KNOWN_STATE_COLORS = {
    "active": "#55a868",
    "overloaded": "#dd8452",
    "misaligned": "#8172b2",
    "withdrawn": "#7f7f7f",
    "pruned": "#c44e52",
}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _shape(records: list[Record]) -> tuple[int, int] | None:
    for record in records:
        shape = record.get("model_shape") or {}
        if isinstance(shape.get("layers"), int) and isinstance(shape.get("heads"), int):
            return shape["layers"], shape["heads"]
    return None


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


def head_pruning_map(records: list[Record], model: str, out: Path) -> Path:
    """Fraction of records (all temperatures and seeds) that prune each head, per method and level."""
    mine = [r for r in records if cell_of(r).model == model]
    shape = _shape(mine)
    if shape is None:
        raise Skip(f"head pruning map for {model}: no record has a model_shape")
    layers, heads = shape
    methods = sorted({cell_of(r).pruning_method for r in mine})
    levels = sorted({cell_of(r).pruning_level for r in mine})
    fig, axes = _grid(len(methods), len(levels), layers, heads)
    image = None
    for i, method in enumerate(methods):
        for j, lvl in enumerate(levels):
            ax = axes[i, j]
            here = [r for r in mine if (cell_of(r).pruning_method, cell_of(r).pruning_level) == (method, lvl)]
            chosen = [r for r in here if not cell_of(r).agency] or here  # baseline arm when there is one
            if not chosen:
                ax.set_axis_off()
                continue
            counts = [[0.0] * heads for _ in range(layers)]
            for record in chosen:
                for layer, head in record.get("pruned_heads") or []:
                    if 0 <= layer < layers and 0 <= head < heads:
                        counts[layer][head] += 1 / len(chosen)
            image = ax.imshow(counts, cmap="Reds", vmin=0, vmax=1, aspect="auto", origin="upper")
            arm = "baseline" if not cell_of(chosen[0]).agency else "agency"
            ax.set_title(f"{method} {level(lvl)}\n{arm}, n={len(chosen)}", fontsize=8)
    _label_edges(axes, layers, heads)
    if image is not None:
        fig.colorbar(
            image, ax=axes.ravel().tolist(), label="fraction of records pruning the head", shrink=0.8
        )
    fig.suptitle(f"Pruned heads — {model} (layers x heads)")
    fig.savefig(path := out / f"head_pruning_{slug(model)}.png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def _mode_states(records: list[Record], layers: int, heads: int) -> list[list[str | None]]:
    grid: list[list[str | None]] = [[None] * heads for _ in range(layers)]
    for layer in range(layers):
        for head in range(heads):
            seen = Counter(
                r["agency"]["state_map"][layer][head]
                for r in records
                if layer < len(r["agency"]["state_map"]) and head < len(r["agency"]["state_map"][layer])
            )
            grid[layer][head] = seen.most_common(1)[0][0] if seen else None
    return grid


def agency_state_map(records: list[Record], model: str, method: str, out: Path) -> Path:
    """The most common end state of each head over an agency cell's records, per temperature and level."""
    mine = [
        r
        for r in records
        if (cell_of(r).model, cell_of(r).pruning_method) == (model, method)
        and cell_of(r).agency
        and isinstance(r.get("agency"), dict)
        and r["agency"].get("state_map")
    ]
    if not mine:
        raise Skip(f"agency state map for {model}/{method}: no agency record has a state_map")
    layers = max(len(r["agency"]["state_map"]) for r in mine)
    heads = max(len(row) for r in mine for row in r["agency"]["state_map"])
    states = sorted({s for r in mine for row in r["agency"]["state_map"] for s in row})
    spare = iter(_pyplot().cm.tab10.colors)
    colors = [KNOWN_STATE_COLORS.get(s) or next(spare) for s in states]
    code = {s: k for k, s in enumerate(states)}
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.patches import Patch

    cmap = ListedColormap(colors).with_extremes(bad="white")
    norm = BoundaryNorm([k - 0.5 for k in range(len(states) + 1)], len(states))
    temps = sorted({cell_of(r).temperature for r in mine})
    levels = sorted({cell_of(r).pruning_level for r in mine})
    fig, axes = _grid(len(temps), len(levels), layers, heads)
    for i, t in enumerate(temps):
        for j, lvl in enumerate(levels):
            ax = axes[i, j]
            here = [r for r in mine if (cell_of(r).temperature, cell_of(r).pruning_level) == (t, lvl)]
            if not here:
                ax.set_axis_off()
                continue
            grid = _mode_states(here, layers, heads)
            codes = [[float("nan") if s is None else code[s] for s in row] for row in grid]
            ax.imshow(codes, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
            ax.set_title(f"T={t:g}, {level(lvl)}\nn={len(here)}", fontsize=8)
    _label_edges(axes, layers, heads)
    fig.legend(
        handles=[Patch(color=c, label=s) for s, c in zip(states, colors, strict=True)],
        loc="outside right center",
        title="head state",
        fontsize=8,
    )
    fig.suptitle(
        f"Agency head states at the end of generation — {model} / {method}\n"
        "(most common state over the cell's records)"
    )
    fig.savefig(path := out / f"agency_states_{slug(model)}_{slug(method)}.png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path
