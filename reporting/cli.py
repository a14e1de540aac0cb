"""``pruning-agency report``: statistics, summary and plots from saved records alone (no model, no torch)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from reporting.units import DEFAULT_DEGENERATE_PERPLEXITY


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pruning-agency report",
        description="Merge result records and write statistics.json, summary.md and plots.",
    )
    parser.add_argument(
        "run_dirs", nargs="+", help="run folders (each with records/), e.g. from several machines"
    )
    parser.add_argument("--out", default=None, help="where to write (default: <first run folder>/report)")
    parser.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keep only records with this config value (repeatable), e.g. model.pruning.mode=remove",
    )
    parser.add_argument(
        "--split-by",
        action="append",
        default=[],
        metavar="KEY",
        help="compare records that differ in this config key instead of refusing to pool them",
    )
    parser.add_argument(
        "--degenerate-ppl",
        type=float,
        default=DEFAULT_DEGENERATE_PERPLEXITY,
        help="a sample whose reference perplexity exceeds this is degenerate text "
        f"(default {DEFAULT_DEGENERATE_PERPLEXITY:g})",
    )
    parser.add_argument("--no-plots", action="store_true", help="statistics and summary only")
    parser.add_argument("--no-wandb", action="store_true", help="do not log the report to W&B")
    parser.add_argument("--project", default="pruning-agency", help="W&B project of the report run")
    parser.add_argument("--quiet", action="store_true", help="no table on the terminal")
    return parser


def report_main(argv: list[str]) -> None:
    """Exit 0 with a report; 2 for bad arguments or records that may not be pooled; 1 when no record is usable."""
    from reporting.design import DesignError, parse_where
    from reporting.report import NoUsableRecords, ReportOptions, log_report_to_wandb, write_report

    args = _parser().parse_args(argv)
    run_dirs = [Path(d) for d in args.run_dirs]
    for run_dir in run_dirs:
        if not (run_dir / "records").is_dir():
            print(
                f"error: run folder '{run_dir}' has no records/ folder; allowed: a folder written by predict, "
                "sweep or demo",
                file=sys.stderr,
            )
            raise SystemExit(2)
    if not args.degenerate_ppl > 1:
        print(
            f"error: --degenerate-ppl {args.degenerate_ppl:g} is invalid; allowed: a perplexity > 1",
            file=sys.stderr,
        )
        raise SystemExit(2)
    out_dir = Path(args.out) if args.out else run_dirs[0] / "report"
    try:
        options = ReportOptions(
            tuple(args.split_by), tuple(parse_where(args.where)), args.degenerate_ppl, not args.no_plots
        )
        result = write_report(run_dirs, out_dir, options)
    except DesignError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except NoUsableRecords as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    for problem in result.problems:
        print(f"warning: {problem}", file=sys.stderr)
    if result.table and not args.quiet:
        print(result.table)
    print(
        f"report: {result.summary_path}, {result.statistics_path}"
        + (f", plots in {out_dir / 'plots'}" if result.plot_paths else "")
    )
    if not args.no_wandb and os.environ.get("WANDB_MODE", "offline") != "disabled":
        try:
            log_report_to_wandb(result, run_dirs[0], group=run_dirs[0].name, project=args.project)
        except Exception as error:  # the local report is what counts
            print(f"warning: the report could not be logged to W&B ({error})", file=sys.stderr)
