"""How numbers are written in text: one place so the summary, the console and the plots agree."""

from __future__ import annotations

import re

MISSING = "—"


def num(value: float | None, digits: int = 4) -> str:
    return MISSING if value is None else f"{value:.{digits}g}"


def pval(value: float | None) -> str:
    if value is None:
        return MISSING
    return "<0.0001" if value < 1e-4 else f"{value:.2g}" if value < 0.01 else f"{value:.3f}"


def floor_text(value: float | None) -> str:
    if value is None:
        return MISSING
    return "no floor (t-test)" if value == 0 else f"{value:.2g}"


def level(value: float | None) -> str:
    """A pruning level as ``30%``; a comparison across levels (a slope) has none."""
    return MISSING if value is None else f"{value:g}%"


def effect_text(
    kind: str, estimate: float | None, low: float | None, high: float | None, unbounded: bool = False
) -> str:
    """``×1.034 [0.981, 1.090]`` for ratios, ``+0.012 [-0.003, +0.027]`` for differences; a missing end is
    unbounded (``unbounded``: both are, a test that can reject no value), else no interval is shown."""
    if estimate is None:
        return MISSING
    if low is None and high is None and not unbounded:
        return f"×{estimate:.3g}" if kind == "ratio" else f"{estimate:+.3g}"
    if kind == "ratio":  # an end the test never rejects is unbounded
        return f"×{estimate:.3g} [{'0' if low is None else f'{low:.3g}'}, {'∞' if high is None else f'{high:.3g}'}]"
    return f"{estimate:+.3g} [{'-∞' if low is None else f'{low:+.3g}'}, {'+∞' if high is None else f'{high:+.3g}'}]"


def slug(text: str) -> str:
    """A file-name-safe version of a model name or label."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"
