"""``pruning-agency dashboard``: a saved W&B workspace view and a W&B report over a sweep's condition runs.

Built with ``wandb_workspaces`` (W&B's workspaces and reports as code). The panels come from the metric
catalogue, never a hand list: each metric's W&B summary key is its name (``callbacks/record_writer.py``
writes the central value there: the geometric mean for log-scale metrics). Every panel plots a summary key
against the run config's ``pruning_level``, runs grouped by ``arm`` and ``temperature`` (the short keys the
record writer adds beside the flat config), with a standard-error band over the runs of a group (seeds,
repeated conditions). ``--dry-run FILE`` writes the specification as JSON and contacts nobody.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from record.catalogue import CATALOGUE, MetricSpec

LEVEL = "pruning_level"  # config key: model.pruning.level, as the record writer logs it for grouping
GROUP_BY = ("arm", "temperature")  # config keys every condition run carries
TABLE_COLUMNS = ("condition_id", "model", "pruning_method", LEVEL, "arm", "temperature", "seed")
CONDITION_JOB = "condition"  # job_type of a condition's run (the report's run is "report")
QUESTION_KINDS = {  # which catalogued kinds of metric answer each report question
    "Q1": ("quality", "speed"),
    "Q2": ("quality", "speed", "cost"),
    "Q3": ("quality", "diversity"),
    "Q4": ("quality", "speed"),
    "Q5": ("quality", "diversity"),
}
OTHER_SECTIONS = {"Costs and memory": ("cost", "memory")}
CONTROLS_SECTION = "A/A and ablation arms"
CONTROL_KINDS = ("quality", "speed")


def summary_key(metric: MetricSpec) -> str:
    """The W&B summary key of a catalogued metric's central value (or of a condition metric)."""
    return metric.name


def _level_panel(metric: MetricSpec, group_by: str | None = None) -> Any:
    import wandb_workspaces.reports.v2 as wr

    return wr.LinePlot(
        title=metric.label,
        x=wr.Config(LEVEL),
        y=[wr.SummaryMetric(summary_key(metric))],
        title_x="pruning level (%)",
        title_y=metric.axis_label,
        log_y=metric.scale == "log" or None,
        groupby=wr.Config(group_by) if group_by else None,
        groupby_aggfunc="mean",
        groupby_rangefunc="stderr",
    )


def _metrics(kinds: Sequence[str]) -> list[MetricSpec]:
    return [m for m in CATALOGUE if m.kind in kinds]


def build_workspace(entity: str, project: str, sweep: str | None = None) -> Any:
    """The saved view: one section per report question, costs, the control arms, and the runs table."""
    import wandb_workspaces.workspaces as ws
    from wandb_workspaces import expr

    from reporting.analyses.registry import QUESTIONS

    sections = [
        ws.Section(
            name=f"{q}: {QUESTIONS[q]}", panels=[_level_panel(m) for m in _metrics(kinds)], is_open=True
        )
        for q, kinds in QUESTION_KINDS.items()
    ]
    sections += [
        ws.Section(name=name, panels=[_level_panel(m) for m in _metrics(kinds)])
        for name, kinds in OTHER_SECTIONS.items()
    ]
    sections.append(
        ws.Section(name=CONTROLS_SECTION, panels=[_level_panel(m, "arm") for m in _metrics(CONTROL_KINDS)])
    )
    filters = [expr.Metric("JobType") == CONDITION_JOB]
    if sweep:
        filters.append(expr.Metric("Sweep") == sweep)
    return ws.Workspace(
        entity=entity,
        project=project,
        name=f"pruning-agency {sweep or project}",
        sections=sections,
        runset_settings=ws.RunsetSettings(
            filters=filters,
            groupby=[expr.Config(key) for key in GROUP_BY],
            pinned_columns=["run:displayName", *(f"config:{key}" for key in TABLE_COLUMNS)],
        ),
    )


def build_report(entity: str, project: str, sweep: str | None = None, report_dir: Path | None = None) -> Any:
    """A W&B report: the summary's answers (``summary.md`` of ``report_dir``), its figures as the report run
    logged them (``plots/<name>``), and the level panels of the primary endpoint over the condition runs."""
    import wandb_workspaces.reports.v2 as wr

    filters = f"JobType = '{CONDITION_JOB}'" + (f" and Sweep = '{sweep}'" if sweep else "")
    blocks: list[Any] = [wr.H1(f"Pruning with and without agency: {sweep or project}")]
    if report_dir is not None:
        blocks += [
            wr.H2("Answers"),
            wr.MarkdownBlock((report_dir / "summary.md").read_text(encoding="utf-8")),
        ]
        figures = sorted((report_dir / "plots").glob("*.png"))
        if figures:
            blocks += [
                wr.H2("Figures"),
                wr.PanelGrid(
                    runsets=[wr.Runset(entity, project, "report", filters="JobType = 'report'")],
                    panels=[
                        wr.MediaBrowser(
                            title="report figures", media_keys=[f"plots/{p.stem}" for p in figures]
                        )
                    ],
                ),
            ]
    blocks += [
        wr.H2("Metrics against the pruning level"),
        wr.PanelGrid(
            runsets=[wr.Runset(entity, project, "conditions", filters=filters, groupby=list(GROUP_BY))],
            panels=[_level_panel(m) for m in _metrics(("quality", "speed"))],
        ),
    ]
    return wr.Report(
        project=project,
        entity=entity,
        title=f"pruning-agency: {sweep or project}",
        description="Does an agency layer over attention heads keep a pruned model faster and better?",
        blocks=blocks,
    )


def specification(workspace: Any, report: Any) -> dict[str, Any]:
    """JSON of both: the workspace as W&B receives it (built offline), the report as its library objects
    (its W&B form needs the server to resolve the project)."""
    from pydantic import TypeAdapter

    return {
        "workspace": workspace._to_model().model_dump(by_alias=True, exclude_none=True, mode="json"),
        "report": TypeAdapter(type(report)).dump_python(report, mode="json"),
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pruning-agency dashboard",
        description="Save a W&B workspace view and a W&B report over a project's (or a sweep's) condition runs.",
    )
    parser.add_argument("target", metavar="ENTITY/PROJECT", help="the W&B project the condition runs are in")
    parser.add_argument("--sweep", default=None, help="only this sweep's runs (its id)")
    parser.add_argument(
        "--report", default=None, help="a folder written by 'report': its answers and figures"
    )
    parser.add_argument(
        "--dry-run", default=None, metavar="FILE", help="write the specification here (JSON) only"
    )
    return parser


def dashboard_main(argv: list[str]) -> None:
    """Exit 0 with the view and report saved (or the specification written); 2 for bad input or W&B out of reach."""
    args = _parser().parse_args(argv)
    parts = args.target.strip("/").split("/")
    if len(parts) != 2 or not all(parts):
        _fail(f"target '{args.target}' is not a W&B project; allowed: ENTITY/PROJECT (and --sweep ID)")
    report_dir = Path(args.report) if args.report else None
    if report_dir is not None and not (report_dir / "summary.md").is_file():
        _fail(
            f"--report '{report_dir}' has no summary.md; allowed: a folder written by 'pruning-agency report'"
        )
    entity, project = parts
    workspace = build_workspace(entity, project, args.sweep)
    report = build_report(entity, project, args.sweep, report_dir)
    if args.dry_run:
        from record.storage import write_text_atomic

        text = json.dumps(specification(workspace, report), indent=1, sort_keys=True) + "\n"
        print(f"dashboard specification: {write_text_atomic(args.dry_run, text)}")
        return
    try:
        workspace.save()
        report.save()
    except Exception as error:  # noqa: BLE001 - no network, no login, no such project: say so once
        message = " ".join(str(error).split()) or type(error).__name__
        _fail(f"W&B could not save the dashboard of {args.target} ({message}); nothing was written")
    print(f"workspace: {workspace.url}\nreport: {report.url}")


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)
