"""Command line: ``predict`` (one condition), ``fit`` / ``recover`` (recovery after pruning), ``sweep`` (a grid),
``report`` (statistics and plots), ``dashboard`` (a W&B workspace and report), ``demo``.

    pruning-agency predict --config configs/default.yaml [--model.pruning.level=50 ...]
    pruning-agency fit --config configs/default.yaml --config configs/recovery.yaml --model.pruning.level=50
    pruning-agency recover ...same arguments as fit...    (predict, fit, then predict the recovered model)
    pruning-agency sweep configs/sweeps/quickstart.yaml [--resume RUN_DIR] [--output_dir DIR]
    pruning-agency sweep quickstart                      (a bundled sweep, by name)
    pruning-agency report RUN_DIR [RUN_DIR ...] [--wandb ENTITY/PROJECT[/SWEEP_ID] ...] [--out DIR]
    pruning-agency dashboard ENTITY/PROJECT [--sweep ID] [--report DIR] [--dry-run FILE]
    pruning-agency demo                                  (the quickstart sweep, then its report)

(``python cli.py ...`` in a checkout is the same.) ``predict`` is a LightningCLI,
so every config key is also a flag and a sweep parameter; bundled configs are
found by name from any directory. ``report`` imports neither torch nor
Lightning, so it starts fast.

Exit codes: 0 done; 2 bad input (one ``error:`` line on stderr, nothing loaded
or written); 1 a condition failed (its record says why) or no record could be
used; 130 / 143 interrupted by Ctrl-C / SIGTERM (finished records kept;
``sweep --resume`` continues). A signal that arrives once a command's work is
done leaves its exit code as it was (a second one exits at once with 128 + signal).
"""

from __future__ import annotations

import argparse
import atexit
import os
import signal
import sys
from pathlib import Path

USAGE = __doc__


def fail(message: str, code: int = 2) -> None:
    """One line on stderr and a non-zero exit: what a user needs when an input is wrong."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def predict(argv: list[str]) -> None:
    """One condition. Ctrl-C or SIGTERM ends it with its record marked incomplete and exit code 128 + signal."""
    from lightning_modules.lightning_cli import run_predict

    _interruptible(
        lambda: run_predict(argv),
        "the condition did not finish; its record, if it had started, has status 'incomplete'",
    )


def fit(argv: list[str]) -> None:
    """Recover one condition: distil the unpruned model into its pruned arm; an interrupted fit resumes."""
    from lightning_modules.lightning_cli import run_fit

    _interruptible(
        lambda: run_fit(argv),
        "the fit did not finish; run the same command again to resume it from its last checkpoint",
    )


def recover(argv: list[str]) -> None:
    """Measure a condition, recover it, and measure the recovered model (two records)."""
    from lightning_modules.lightning_cli import run_predict
    from lightning_modules.runs.runner import recover_condition

    def both() -> None:
        # The run folder as the CLI resolved it (flag in either form, config file, else a new default), fixed
        # for the fit and the recovered measurement so that all three land in the same folder.
        measured = run_predict(argv)
        output = str(measured.config[measured.subcommand].record.output_dir)
        from lightning_modules.inputs.wandb_guard import finish_wandb_run

        finish_wandb_run(0)
        recover_condition([*argv, f"--record.output_dir={output}"], Path(output), quiet=False)

    _interruptible(both, "not everything finished; run the same command again to resume")


def _interruptible(run, unfinished: str) -> None:
    """Ctrl-C or SIGTERM: one line and exit code 128 + signal; what was written stays."""
    from lightning_modules.inputs.wandb_guard import exit_process, finish_wandb_run
    from lightning_modules.runs.interruption import interrupt_on_signals

    with interrupt_on_signals() as interruption:
        try:
            run()
        except BaseException:
            if interruption.signum is None:
                raise
            with interruption.critical():
                finish_wandb_run(exit_code=interruption.exit_code)
            print(f"interrupted by {interruption.name}: {unfinished}", file=sys.stderr, flush=True)
            exit_process(interruption.exit_code)


def _sweep_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Run a W&B sweep file locally, in one process.")
    parser.add_argument(
        "sweep_file", help="a sweep file, or the name of a bundled one (quickstart, gpt2, ...)"
    )
    parser.add_argument("--output_dir", default=None, help="run folder (default: a new timestamped one)")
    parser.add_argument("--resume", default=None, help="run folder of an interrupted sweep to continue")
    parser.add_argument("--count", type=int, default=None, help="runs of a random sweep (else run_cap)")
    parser.add_argument("--quiet", action="store_true", help="one line per condition")
    return parser


def run_sweep_command(
    sweep_file: str,
    output_dir: str | None = None,
    resume: str | None = None,
    count: int | None = None,
    quiet: bool = False,
) -> Path | None:
    """Run a sweep and turn its outcome into an exit status; returns the run folder when every condition ran."""
    from lightning_modules.inputs.wandb_guard import exit_process
    from lightning_modules.runs.runner import SweepFailed, SweepInterrupted, run_sweep
    from record.errors import ConfigError

    try:
        return run_sweep(sweep_file, output_dir, resume, count, quiet)
    except SweepInterrupted as interrupted:
        print(f"{interrupted}", file=sys.stderr, flush=True)
        exit_process(interrupted.exit_code)
    except SweepFailed as failed:
        print(f"error: {failed}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    except ConfigError as error:
        fail(str(error))
    return None


def sweep(argv: list[str]) -> None:
    args = _sweep_parser("pruning-agency sweep").parse_args(argv)
    run_sweep_command(args.sweep_file, args.output_dir, args.resume, args.count, args.quiet)


def demo(argv: list[str]) -> None:
    """The main job: the bundled quickstart sweep on the embedded model and its attribution control (the
    protected baseline, ``quickstart_protected``), then their report, under the current directory."""
    from record.storage import default_run_dir
    from reporting.cli import report_main

    parser = argparse.ArgumentParser(prog="pruning-agency demo", description=demo.__doc__)
    parser.add_argument("--output_dir", default=None, help="run folder (default: a new timestamped one)")
    args = parser.parse_args(argv)
    run_dir = Path(args.output_dir) if args.output_dir else default_run_dir()
    try:
        for sweep_name in ("quickstart", "quickstart_protected"):
            run_sweep_command(sweep_name, output_dir=str(run_dir), quiet=True)
    except SystemExit as exit_:
        if (
            exit_.code == 1 and (run_dir / "records").is_dir()
        ):  # report what did run, then say not everything did
            report_main([str(run_dir)])
        raise
    report_main([str(run_dir)])


def main(argv: list[str] | None = None) -> None:
    """Run one command; a ``ConfigError`` from anywhere in it (a setup, the report) ends it as bad input."""
    from record.errors import ConfigError

    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("WANDB_MODE", "offline")  # no account needed; WANDB_MODE from the environment wins
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    try:
        _dispatch(argv[0], argv[1:])
    except ConfigError as error:
        fail(str(error))
    except SystemExit as exit_:  # a refusal carried out through library code (inputs.arguments.InputRefused)
        refused = getattr(exit_, "error", None)
        if isinstance(refused, ConfigError):
            fail(str(refused))
        raise


def _dispatch(command: str, rest: list[str]) -> None:
    if command == "predict":
        predict(rest)
    elif command == "fit":
        fit(rest)
    elif command == "recover":
        recover(rest)
    elif command == "sweep":
        sweep(rest)
    elif command == "report":
        from reporting.cli import report_main

        report_main(rest)
    elif command == "demo":
        demo(rest)
    elif command == "dashboard":  # W&B workspace and report; neither torch nor Lightning
        from reporting.dashboard import dashboard_main

        dashboard_main(rest)
    else:
        fail(
            f"command '{command}' is not known; allowed: predict, fit, recover, sweep, report, dashboard, demo"
        )


LATE_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def run_as_process(argv: list[str] | None = None) -> None:
    """``main`` as a whole process (``python cli.py``, ``pruning-agency``): a signal that arrives after the
    command's own work cannot turn its outcome into a traceback or a death by signal.

    While a command runs, its own handlers decide (``runs.interruption``). Once it has returned or raised,
    everything it measured is written: the first Ctrl-C or SIGTERM during the exit hooks (W&B's, torch's) is
    ignored and a second one exits at once with 128 + signal (a hook that hangs). After the exit hooks Python
    puts its own handlers back to the default, death by signal, for the rest of its shutdown; the hook
    registered here, before any library registers one, runs last and ignores signals from then on.
    """
    atexit.register(_ignore_late_signals)
    try:
        main(argv)
    finally:
        _exit_on_second_signal()


def _exit_on_second_signal() -> None:
    seen: list[int] = []

    def handler(signum: int, _frame: object) -> None:
        if seen:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(128 + signum)
        seen.append(signum)

    for sig in LATE_SIGNALS:
        signal.signal(sig, handler)


def _ignore_late_signals() -> None:
    for sig in LATE_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


if __name__ == "__main__":
    run_as_process()
