"""``report``: records in, ``statistics.json`` + ``summary.md`` + ``plots/`` out, optionally to W&B.

Only light imports at module level: scipy, matplotlib and wandb load when a
report is actually written or logged, so the command line stays quick.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from record.storage import write_json_atomic
from reporting.optimal import DEFAULT_QUALITY_MARGIN, Margin
from reporting.records import LoadedRecords, load_records
from reporting.units import DEFAULT_DEGENERATE_PERPLEXITY, Units

log = logging.getLogger(__name__)


class NoUsableRecords(Exception):
    """Nothing to report on; the message names every file that could not be used."""


@dataclass(frozen=True)
class ReportOptions:
    """How the records are read: which keys are compared, which records kept, the degenerate-text threshold, and
    the quality margin a pruning level must keep to be chosen (a perplexity ratio to the unpruned model)."""

    split_by: tuple[str, ...] = ()
    where: tuple[tuple[str, Any], ...] = ()
    degenerate_perplexity: float = DEFAULT_DEGENERATE_PERPLEXITY
    plots: bool = True
    input_problems: tuple[str, ...] = ()  # files refused before loading (e.g. downloads from W&B)
    quality_margin: float = DEFAULT_QUALITY_MARGIN
    announce: bool = False  # a progress line on stderr once the records are read and may be pooled

    def __post_init__(self) -> None:
        Margin(self.quality_margin)  # refused here, before any record is read


@dataclass
class ReportResult:
    """Where the report went, and everything about the inputs a reader should know."""

    out_dir: Path
    statistics_path: Path
    summary_path: Path
    plot_paths: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    n_records: int = 0
    table: str = ""
    significant_primary: dict[str, int] = field(default_factory=dict)  # per question: significant comparisons


def json_safe(value: Any) -> Any:
    """Plain JSON: NaN and infinities become null, tuples lists, paths and other objects strings."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json_safe(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [json_safe(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item"):  # numpy scalar
        return json_safe(value.item())
    return str(value)


def _nothing_usable(loaded: LoadedRecords, run_dirs: Sequence[Path]) -> NoUsableRecords:
    if not loaded.files:
        return NoUsableRecords(f"no record files in {', '.join(str(d / 'records') for d in run_dirs)}")
    names = ", ".join(str(p) for p in loaded.unreadable) or "none"
    return NoUsableRecords(
        f"no usable record among {loaded.files} files; unreadable: {names}; "
        f"others: {len(loaded.problems) - len(loaded.unreadable)} incomplete, failed or duplicate"
    )


def write_report(
    run_dirs: Sequence[Path], out_dir: Path, options: ReportOptions | None = None
) -> ReportResult:
    """Load every record of ``run_dirs``, compute the statistics, write the summary and the plots."""
    from reporting.console import console_table
    from reporting.design import build_design
    from reporting.statistics import compute_statistics
    from reporting.summary import write_summary

    options = options or ReportOptions()
    run_dirs = [Path(d) for d in run_dirs]
    loaded = load_records(run_dirs)
    if not loaded.records:
        raise _nothing_usable(loaded, run_dirs)
    design = build_design(loaded.records, loaded.swept_keys, options.split_by, options.where)
    if not design.records:
        raise NoUsableRecords(f"no record matches --where {' '.join(f'{k}={v}' for k, v in options.where)}")
    if options.announce:  # statistics and plots take seconds to a minute: say what is being done
        plots = " and plots" if options.plots else ""
        print(
            f"report: {len(design.records)} records -> statistics, summary{plots} ...",
            file=sys.stderr,
            flush=True,
        )
    stats = compute_statistics(
        design, Units(options.degenerate_perplexity), margin=Margin(options.quality_margin)
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    problems = [*options.input_problems, *loaded.problems, *stats.problems]
    plot_paths, skipped = [], []
    if options.plots:
        from reporting.plots import make_plots

        outcome = make_plots(design, stats, out_dir / "plots")
        plot_paths, skipped = outcome.paths, outcome.notes
    payload = {
        "inputs": {
            "run_dirs": [str(d) for d in run_dirs],
            "n_records": len(design.records),
            "records": {cid: str(path) for cid, path in loaded.sources.items()},
            "problems": problems,
            "compared_keys": sorted(design.split_keys),
        },
        **stats.to_dict(),
        "plots": [str(p.relative_to(out_dir)) for p in plot_paths],
        "plots_skipped": skipped,
    }
    statistics_path = write_json_atomic(out_dir / "statistics.json", json_safe(payload))
    summary_path = write_summary(stats, len(design.records), problems, out_dir / "summary.md", skipped)
    significant = {
        q: sum(c.significant(stats.alpha) for c in stats.family(q)) for q in ("Q1", "Q2", "Q3", "Q4", "Q5")
    }
    return ReportResult(
        out_dir,
        statistics_path,
        summary_path,
        plot_paths,
        problems,
        skipped,
        len(design.records),
        console_table(stats),
        significant,
    )


REPORT_ARTIFACT_TYPE = "report"


def report_artifact(result: ReportResult, name: str) -> Any:
    """The report folder (summary, statistics, figures) as one artifact; a new report of the same folder is a
    new version of the same name."""
    import re

    import wandb

    artifact = wandb.Artifact(
        "report-" + re.sub(r"[^A-Za-z0-9._-]", "-", name),
        type=REPORT_ARTIFACT_TYPE,
        metadata={"n_records": result.n_records, "significant_primary": result.significant_primary},
    )
    artifact.add_file(str(result.summary_path), name=result.summary_path.name)
    artifact.add_file(str(result.statistics_path), name=result.statistics_path.name)
    for path in result.plot_paths:
        artifact.add_file(str(path), name=str(path.relative_to(result.out_dir)))
    return artifact


def log_report_to_wandb(result: ReportResult, run_dir: Path, group: str | None, project: str) -> Any:
    """Log the plots, the summary and the comparisons in a ``job_type="report"`` run saved in ``run_dir``."""
    import json

    import wandb

    run = wandb.init(
        project=project,
        group=group,
        job_type="report",
        dir=str(run_dir),
        # Passed explicitly: with None, a W&B set-up made earlier in the process would decide. W&B checks
        # the value; its annotation lists fewer modes than it accepts (legacy "dryrun", "run").
        mode=os.environ.get("WANDB_MODE", "offline"),  # type: ignore[arg-type]
        name=f"report-{Path(run_dir).name}",
    )
    try:
        stats = json.loads(result.statistics_path.read_text(encoding="utf-8"))
        columns: list[str | int] = [  # wandb.Table's annotation: names or indices
            "family",
            "series",
            "arm",
            "metric",
            "contrast",
            "level",
            "temperature",
            "shown",
            "ci_low",
            "ci_high",
            "holm_ci_low",
            "holm_ci_high",
            "p_holm",
            "reading",
        ]
        rows = [
            [
                c["family"],
                " / ".join(str(v) for v in c["series"].values() if v),
                c["arm"]["label"],
                c["metric"],
                c["contrast"],
                c["level"],
                c["temperature"],
                *c["shown"],
                *(c["shown_holm_ci"] or [None, None]),
                c["p_holm"],
                c["reading"],
            ]
            for c in stats["comparisons"]
            if c["family"] != "exploratory"
        ]
        payload: dict[str, Any] = {"comparisons": wandb.Table(columns=columns, data=rows)}
        for path in result.plot_paths:
            payload[f"plots/{path.stem}"] = wandb.Image(str(path))
        run.log(payload)
        run.summary["n_records"] = result.n_records
        run.summary["problems"] = result.problems
        run.summary["summary_md"] = result.summary_path.read_text(encoding="utf-8")
        run.log_artifact(report_artifact(result, Path(run_dir).name))
    finally:
        run.finish()
    return run
