"""A compact table of cell means for the terminal: what `make demo` prints at the end."""

from __future__ import annotations

from reporting.format import num
from reporting.statistics import Statistics

COLUMNS = (
    ("tok/s", "sample", "tokens_per_second"),
    ("1st token s", "sample", "first_token_latency_s"),
    ("ref ppl", "sample", "reference_perplexity"),
    ("corpus ppl", "condition", "corpus_perplexity"),
    ("distinct-2", "sample", "distinct_2"),
    ("params", "condition", "parameter_count"),
)


def console_table(stats: Statistics) -> str:
    """One row per cell (model, method, temperature, level, arm); means over its samples or records."""
    header = ["model", "method", "T", "level", "arm", *(name for name, _, _ in COLUMNS)]
    rows = []
    for cell_stats in sorted(stats.cells, key=lambda c: (c.cell.model, c.cell.pruning_method, c.cell.temperature,
                                                          c.cell.pruning_level, c.cell.agency)):
        cell = cell_stats.cell
        values = []
        for _, kind, name in COLUMNS:
            description = (cell_stats.sample if kind == "sample" else cell_stats.condition).get(name)
            values.append(num(description.mean if description else None))
        rows.append([cell.model, cell.pruning_method, f"{cell.temperature:g}", f"{cell.pruning_level:g}%",
                     "agency" if cell.agency else "baseline", *values])
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(x).rjust(w) for x, w in zip(line, widths, strict=True)) for line in [header, *rows]]
    return "\n".join(lines)
