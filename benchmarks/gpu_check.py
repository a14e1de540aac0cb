"""The prepared GPU check: CUDA contract tests, figure 7 and a 4-condition sweep, then one summary table.

    bash benchmarks/gpu_check.sh [RUN_DIR]     # the sweep's records go to RUN_DIR (default: a temporary folder)

Run it whenever a CUDA machine is available (under 5 minutes on one GPU). Without a GPU
it says so and exits 0. Exit status 1 when a contract test fails, a figure 7 goal is
missed or a sweep condition does not complete. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make the repository importable
    sys.path.insert(0, str(REPO))

SWEEP = "smoke_cuda"  # configs/sweeps/smoke_cuda.yaml: embedded model, 0 and 50%, both arms, on cuda


@dataclass
class Line:
    """One line of the summary table."""

    step: str
    check: str
    result: str
    details: str = ""
    failed: bool = False


# -- reading each step's output ---------------------------------------------------------------------------
def contract_lines(junit_xml: Path) -> list[Line]:
    """One line per CUDA contract test (pytest -m cuda), read from pytest's JUnit XML."""
    if not junit_xml.is_file():
        return [
            Line("contracts", "pytest -m cuda", "did not run", "no JUnit report was written", failed=True)
        ]
    lines = []
    for case in ElementTree.parse(junit_xml).getroot().iter("testcase"):
        name = f"{Path(case.get('file') or case.get('classname', '').replace('.', '/')).name}::{case.get('name')}"
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        skipped = case.find("skipped")
        if problem is not None:
            lines.append(Line("contracts", name, "FAILED", (problem.get("message") or "")[:120], failed=True))
        elif skipped is not None:
            lines.append(Line("contracts", name, "skipped", (skipped.get("message") or "")[:120]))
        else:
            lines.append(Line("contracts", name, "passed", f"{float(case.get('time', 0)):.1f} s"))
    return lines or [Line("contracts", "pytest -m cuda", "no tests collected", failed=True)]


def figure_lines(rows: list) -> list[Line]:
    """Figure 7's rows (benchmarks.common.Row): a ratio, its goal and what it was measured on."""
    lines = []
    for row in rows:
        value = "-" if row.value is None else f"{row.value:.3f}"
        goal = "" if row.goal is None else f" (goal >= {row.goal:g})"
        lines.append(
            Line(
                "figure 7",
                f"{row.figure.removeprefix('7 gpu: ')} / {row.line.strip()}",
                f"{value} {row.status}",
                f"{row.model}, {row.setup}, batch {row.batch}{goal} {row.note}".strip(),
                failed=row.missed,
            )
        )
    return lines


def sweep_lines(run_dir: Path, exit_code: int) -> list[Line]:
    """One line per condition record: status, median timed tokens/s, peak CUDA memory, corpus perplexity."""
    from record.storage import read_record

    paths = sorted((run_dir / "records").glob("*.json"))
    lines = []
    for path in paths:
        try:
            record = read_record(path)
        except Exception as error:  # noqa: BLE001 - a damaged record is a failed check, not a crash of the check
            lines.append(Line("sweep", path.stem, "unreadable", str(error)[:120], failed=True))
            continue
        speeds = [
            r.metrics["tokens_per_second"]
            for r in (record.timing.repeats if record.timing else [])
            if "tokens_per_second" in r.metrics
        ]
        metrics = record.condition_metrics
        details = ", ".join(
            part
            for part in (
                f"{statistics.median(speeds):.1f} tok/s (median of {len(speeds)})" if speeds else "no timing",
                f"peak CUDA {metrics['peak_cuda_mb']:.0f} MB"
                if "peak_cuda_mb" in metrics
                else "no peak CUDA memory",
                f"corpus ppl {metrics['corpus_perplexity']:.4g}" if "corpus_perplexity" in metrics else "",
                f"{len(record.failures)} failure(s): {record.failures[0].metric}" if record.failures else "",
            )
            if part
        )
        device = (record.timing.device if record.timing else "") or "?"
        lines.append(
            Line(
                "sweep",
                record.condition_id,
                f"{record.status} on {device}",
                details,
                failed=record.status != "complete" or not device.startswith("cuda"),
            )
        )
    if exit_code != 0 or len(paths) != 4:
        lines.append(
            Line(
                "sweep",
                f"pruning-agency sweep {SWEEP}",
                f"exit {exit_code}",
                f"{len(paths)} of 4 records written",
                failed=True,
            )
        )
    return lines


def format_summary(lines: list[Line]) -> str:
    header = Line("step", "check", "result", "details")
    cells = [header, *lines]
    widths = [max(len(getattr(line, name)) for line in cells) for name in ("step", "check", "result")]
    out = []
    for i, line in enumerate(cells):
        out.append(
            " | ".join(
                getattr(line, name).ljust(w)
                for name, w in zip(("step", "check", "result"), widths, strict=True)
            )
            + " | "
            + line.details
        )
        if i == 0:
            out.append("-+-".join("-" * w for w in widths) + "-+-" + "-" * len("details"))
    failed = sum(line.failed for line in lines)
    out.append(f"\n{failed} check(s) failed" if failed else "\nevery check passed")
    return "\n".join(out)


# -- running each step ------------------------------------------------------------------------------------
def run_contracts(work: Path) -> list[Line]:
    junit = work / "cuda_contracts.xml"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-m",
            "cuda",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--junitxml={junit}",
            "-o",
            "junit_family=xunit1",
        ],
        cwd=REPO,
        check=False,
    )
    return contract_lines(junit)


def run_figure_7() -> list[Line]:
    from benchmarks import figures
    from benchmarks.run import format_table, gpu

    rows = gpu(None, figures.Settings.for_run(quick=True, full_grid=False))
    print(format_table(rows), flush=True)
    return figure_lines(rows)


def run_sweep(run_dir: Path) -> list[Line]:
    completed = subprocess.run(
        [sys.executable, str(REPO / "cli.py"), "sweep", SWEEP, "--output_dir", str(run_dir), "--quiet"],
        cwd=REPO,
        check=False,
    )
    return sweep_lines(run_dir, completed.returncode)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "run_dir", nargs="?", help="where the sweep writes its records (default: a temporary folder)"
    )
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print(
            f"no GPU: torch {torch.__version__} sees no CUDA device (CUDA build: {torch.version.cuda or 'none'}); "
            "nothing to check here. Run benchmarks/gpu_check.sh on a machine with a CUDA GPU."
        )
        return 0
    print(
        f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}",
        flush=True,
    )
    lines: list[Line] = []
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as scratch:
        work = Path(scratch)
        run_dir = Path(args.run_dir) if args.run_dir else work / "sweep"
        for name, step in (
            ("CUDA contract tests", lambda: run_contracts(work)),
            ("figure 7", run_figure_7),
            (f"sweep {SWEEP}", lambda: run_sweep(run_dir)),
        ):
            print(f"\n== {name} ==", flush=True)
            start = time.perf_counter()
            lines.extend(step())
            print(f"({name}: {time.perf_counter() - start:.0f} s)", flush=True)
    print("\n== summary ==")
    print(format_summary(lines))
    return 1 if any(line.failed for line in lines) else 0


if __name__ == "__main__":
    sys.exit(main())
