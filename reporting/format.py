"""How numbers are written in text: one place so the summary and the plots agree."""

from __future__ import annotations

import re

MISSING = "—"


def num(value: float | None, digits: int = 4) -> str:
    return MISSING if value is None else f"{value:.{digits}g}"


def pval(value: float | None) -> str:
    if value is None:
        return MISSING
    return "<0.0001" if value < 1e-4 else f"{value:.3g}"


def percent(fraction: float | None) -> str:
    return MISSING if fraction is None else f"{100 * fraction:+.1f}%"


def interval(low: float | None, high: float | None, digits: int = 4) -> str:
    if low is None or high is None:
        return "no CI"
    return f"[{low:.{digits}g}, {high:.{digits}g}]"


def level(value: float) -> str:
    return f"{value:g}%"


def slug(text: str) -> str:
    """A file-name-safe version of a model name or label."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"
