"""Command line: ``predict`` (one condition), ``sweep`` (a grid), ``report`` (statistics and plots), ``demo``.

    python cli.py predict --config configs/default.yaml [--model.pruning.level=50 ...]
    python cli.py sweep configs/sweeps/quickstart.yaml [--resume RUN_DIR] [--output_dir DIR]
    python cli.py report RUN_DIR [RUN_DIR ...] [--out DIR]
    python cli.py demo

``predict`` is a LightningCLI, so every config key is also a flag and a sweep
parameter. ``report`` imports neither torch nor Lightning, so it starts fast.

Exit codes: 0 done; 2 bad input (one ``error:`` line on stderr, nothing loaded
or written); 1 a condition failed (its record says why); 130 / 143 interrupted
by Ctrl-C / SIGTERM (finished records kept; ``sweep --resume`` continues).
"""

from __future__ import annotations

import os
import sys

USAGE = __doc__


def fail(message: str, code: int = 2) -> None:
    """One line on stderr and a non-zero exit: what a user needs when an input is wrong."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def predict(argv: list[str]) -> None:
    """One condition. Ctrl-C or SIGTERM ends it with its record marked incomplete and exit code 128 + signal."""
    from lightning_modules.lightning_cli import (
        exit_process,
        finish_wandb_run,
        interrupt_on_signals,
        run_predict,
    )

    with interrupt_on_signals() as interruption:
        try:
            run_predict(argv)
        except BaseException:  # a library may wrap the KeyboardInterrupt in its own exception
            if interruption.signum is None:
                raise  # --help, bad input (already reported), a real exit or a real error
            with interruption.critical():
                finish_wandb_run(exit_code=interruption.exit_code)
            print(f"interrupted by {interruption.name}: the condition did not finish; its record, if it had "
                  "started, has status 'incomplete'", file=sys.stderr, flush=True)
            exit_process(interruption.exit_code)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("WANDB_MODE", "offline")  # no account needed; WANDB_MODE from the environment wins
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command == "predict":
        predict(rest)
    elif command == "sweep":
        from lightning_modules.sweep import sweep_main

        sweep_main(rest)
    elif command == "report":
        from reporting.cli import report_main

        report_main(rest)
    elif command == "demo":
        from lightning_modules.sweep import demo_main

        demo_main(rest)
    else:
        fail(f"unknown command '{command}'; allowed: predict, sweep, report, demo")


if __name__ == "__main__":
    main()
