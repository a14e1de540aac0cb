"""``report``: records in, ``statistics.json`` + ``summary.md`` + ``plots/`` out, optionally to W&B.

Only light imports at module level: scipy, matplotlib and wandb are loaded
when a report is actually written or logged, so the command line stays quick.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from callbacks.record import write_json_atomic

from reporting.records import load_records

log = logging.getLogger(__name__)


@dataclass
class ReportResult:
    """Where the report went, and everything about the inputs a reader should know."""

    out_dir: Path
    statistics_path: Path
    summary_path: Path
    plot_paths: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # figures not drawn, and why
    n_records: int = 0
    table: str = ""  # cell means for the terminal


def json_safe(value: Any) -> Any:
    """Plain JSON: NaN and infinities become null, tuples lists, paths and other objects strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json_safe(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [json_safe(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item"):  # numpy scalar
        return json_safe(value.item())
    return str(value)


def write_report(run_dirs: list[Path], out_dir: Path) -> ReportResult:
    """Load every record of ``run_dirs``, compute the statistics, write the summary and the plots."""
    from reporting.plots import make_plots
    from reporting.statistics import compute_statistics
    from reporting.summary import write_summary

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    loaded = load_records(run_dirs)
    stats = compute_statistics(loaded.records)
    problems = [*loaded.problems, *stats.problems]
    plots = make_plots(loaded.records, stats, out_dir / "plots")
    payload = {
        "inputs": {
            "run_dirs": [str(d) for d in run_dirs],
            "n_records": len(loaded.records),
            "records": {cid: str(path) for cid, path in loaded.sources.items()},
            "problems": problems,
        },
        **stats.to_dict(),
        "plots": [str(p.relative_to(out_dir)) for p in plots.paths],
        "plots_skipped": plots.notes,
    }
    statistics_path = write_json_atomic(out_dir / "statistics.json", json_safe(payload))
    summary_path = write_summary(stats, len(loaded.records), problems, out_dir / "summary.md", plots.notes)
    from reporting.console import console_table

    return ReportResult(
        out_dir, statistics_path, summary_path, plots.paths, problems, plots.notes, len(loaded.records),
        console_table(stats),
    )


def _cell_table_rows(statistics_path: Path) -> tuple[list[str], list[list[Any]]]:
    import json

    stats = json.loads(statistics_path.read_text(encoding="utf-8"))
    columns = [
        "model",
        "pruning_method",
        "temperature",
        "pruning_level",
        "arm",
        "metric",
        "mean",
        "std",
        "ci_low",
        "ci_high",
        "n",
        "n_failed",
    ]
    rows = []
    for entry in stats["cells"]:
        cell = entry["cell"]
        arm = "agency" if cell["agency"] else "baseline"
        for name, d in {**entry["sample"], **entry["condition"]}.items():
            rows.append(
                [
                    cell["model"],
                    cell["pruning_method"],
                    cell["temperature"],
                    cell["pruning_level"],
                    arm,
                    name,
                    d["mean"],
                    d["std"],
                    d["ci_low"],
                    d["ci_high"],
                    d["n"],
                    d["n_failed"],
                ]
            )
    return columns, rows


def log_report_to_wandb(result: ReportResult, group: str | None, project: str) -> Any:
    """Log the plots and a per-cell table in a ``job_type="report"`` run; a no-op without wandb.

    The run is offline unless ``WANDB_MODE`` says otherwise, like the experiment runs.
    """
    try:
        import wandb
    except ImportError:
        log.warning("wandb is not installed; the report is only on disk at %s", result.out_dir)
        return None
    run = wandb.init(
        project=project,
        group=group,
        job_type="report",
        mode=os.environ.get("WANDB_MODE", "offline"),
        name=f"report-{result.out_dir.name}",
    )
    try:
        columns, rows = _cell_table_rows(result.statistics_path)
        payload: dict[str, Any] = {"cell_statistics": wandb.Table(columns=columns, data=rows)}
        for path in result.plot_paths:
            payload[f"plots/{path.stem}"] = wandb.Image(str(path))
        run.log(payload)
        run.summary["n_records"] = result.n_records
        run.summary["problems"] = result.problems
        run.summary["summary_md"] = result.summary_path.read_text(encoding="utf-8")
    finally:
        run.finish()
    return run
