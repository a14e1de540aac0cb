"""AgencyReporter: the agency arm's report lands in the record; the baseline keeps null."""

from __future__ import annotations

import json

from callbacks.agency_report import AgencyReporter


def test_agency_arm_records_the_controller_report(run_condition) -> None:
    module = run_condition([AgencyReporter()], agency=True, level=25)
    report = module.record.agency
    assert isinstance(report, dict) and report
    assert report == module.condition.agency.report(module.condition.pruned_heads)
    json.dumps(report, allow_nan=False)  # JSON-safe, as the record file needs


def test_baseline_keeps_null(run_condition) -> None:
    module = run_condition([AgencyReporter()], agency=False)
    assert module.record.agency is None
    assert module.record.failures == []


def test_report_error_is_a_failure(run_condition, monkeypatch) -> None:
    from lightning_modules.agency import AgencyController

    def broken(self, pruned_heads):
        raise ValueError("pruned head (9, 9) is outside")

    monkeypatch.setattr(AgencyController, "report", broken)
    module = run_condition([AgencyReporter()], agency=True)
    assert module.record.agency is None
    assert module.record.failures == [{"metric": "agency_report", "error": "ValueError: pruned head (9, 9) is outside"}]
