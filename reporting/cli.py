"""``cli.py report``: statistics, summary and plots from saved records alone (no model, no torch)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cli.py report", description="Merge result records and write statistics, summary.md and plots."
    )
    parser.add_argument(
        "run_dirs", nargs="+", help="run folders (each with records/), e.g. from several machines"
    )
    parser.add_argument("--out", default=None, help="where to write (default: <first run dir>/report)")
    parser.add_argument("--no-wandb", action="store_true", help="do not log the report to W&B")
    parser.add_argument("--project", default="pruning-agency", help="W&B project of the report run")
    return parser


def report_main(argv: list[str]) -> None:
    args = _parser().parse_args(argv)
    run_dirs = [Path(d) for d in args.run_dirs]
    for run_dir in run_dirs:
        if not (run_dir / "records").is_dir():
            print(f"error: '{run_dir}' is not a run folder (it has no records/ folder)", file=sys.stderr)
            raise SystemExit(2)
    out_dir = Path(args.out) if args.out else run_dirs[0] / "report"
    from reporting.report import log_report_to_wandb, write_report

    result = write_report(run_dirs, out_dir)
    for problem in result.problems:
        print(f"warning: {problem}", file=sys.stderr)
    if result.table:
        print(result.table)
    print(f"report: {out_dir / 'summary.md'}, {out_dir / 'statistics.json'}, plots in {out_dir / 'plots'}")
    if not args.no_wandb and os.environ.get("WANDB_MODE", "offline") != "disabled":
        try:
            log_report_to_wandb(result, group=run_dirs[0].name, project=args.project)
        except Exception as error:  # the local report is what counts
            print(f"warning: the report could not be logged to W&B ({error})", file=sys.stderr)
