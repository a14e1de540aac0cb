"""``pruning-agency report``: statistics, summary and plots from saved records alone (no model, no torch)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reporting.units import DEFAULT_DEGENERATE_PERPLEXITY

if TYPE_CHECKING:
    from reporting.wandb_source import RecordStore


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pruning-agency report",
        description="Merge result records and write statistics.json, summary.md and plots.",
    )
    parser.add_argument(
        "run_dirs", nargs="*", help="run folders (each with records/), e.g. from several machines"
    )
    parser.add_argument(
        "--wandb",
        action="append",
        default=[],
        metavar="ENTITY/PROJECT[/SWEEP_ID]",
        help="also the condition records logged to W&B by a sweep's runs (or a project's, with --where); "
        "repeatable; needs network and 'wandb login'",
    )
    parser.add_argument(
        "--wandb-dir",
        default=None,
        help="where W&B records are kept as run folders (default: validation_results/pruning_agency)",
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


def report_main(argv: list[str], store: RecordStore | None = None) -> None:
    """Exit 0 with a report; 2 for bad arguments, W&B out of reach, or records that may not be pooled; 1 when no
    record is usable. ``store`` is how W&B is asked (default: its public API)."""
    from reporting.design import DesignError, parse_where
    from reporting.report import NoUsableRecords, ReportOptions, log_report_to_wandb, write_report

    args = _parser().parse_args(argv)
    run_dirs = [Path(d) for d in args.run_dirs]
    if not run_dirs and not args.wandb:
        print(
            "error: no records named; allowed: run folders and/or --wandb ENTITY/PROJECT[/SWEEP_ID]",
            file=sys.stderr,
        )
        raise SystemExit(2)
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
    try:
        where = tuple(parse_where(args.where))
    except DesignError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    input_problems: list[str] = []
    if args.wandb:
        downloaded_dirs, input_problems = _download_wandb(args.wandb, args.wandb_dir, where, store)
        run_dirs += downloaded_dirs
    out_dir = Path(args.out) if args.out else run_dirs[0] / "report"
    try:
        options = ReportOptions(
            tuple(args.split_by),
            where,
            args.degenerate_ppl,
            not args.no_plots,
            tuple(input_problems),
            announce=not args.quiet,
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
        except Exception as error:  # noqa: BLE001 - the local report is what counts
            print(f"warning: the report could not be logged to W&B ({error})", file=sys.stderr)


def _download_wandb(
    paths: list[str], root: str | None, where: tuple[tuple[str, Any], ...], store: RecordStore | None
) -> tuple[list[Path], list[str]]:
    """The W&B targets' records as local run folders, with the downloads refused; exit 2 when W&B is out of reach."""
    from record.storage import DEFAULT_ROOT
    from reporting.wandb_source import PublicApiStore, WandbTarget, WandbUnavailable, download_all

    try:
        targets = [WandbTarget.parse(path) for path in paths]
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        downloads = download_all(
            targets, store or PublicApiStore(), Path(root) if root else DEFAULT_ROOT, where
        )
    except WandbUnavailable as error:
        print(
            f"error: {error}; nothing was written (local run folders need neither network nor login)",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    problems = []
    for target, downloaded in zip(targets, downloads, strict=True):
        problems += downloaded.problems
        repeats = f", {downloaded.repeats} re-runs taken once" if downloaded.repeats else ""
        print(f"W&B {target}: {downloaded.records} records -> {downloaded.run_dir}{repeats}", file=sys.stderr)
    return [d.run_dir for d in downloads], problems
