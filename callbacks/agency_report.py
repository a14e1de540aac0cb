"""The agency layer's end-of-condition summary (head states, utilization) into the record."""

from __future__ import annotations

import lightning as L

from callbacks.common import error_text

AGENCY_REPORT = "agency_report"


class AgencyReporter(L.Callback):
    """Sets ``record.agency`` to ``condition.agency.report(pruned_heads)`` when the agency arm runs.

    It runs in ``on_predict_end``, while the controller still holds the last
    batch's states (teardown detaches it). Baseline conditions keep ``agency: null``.
    """

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        condition = pl_module.condition
        if condition is None or condition.agency is None:
            return
        try:
            pl_module.record.agency = condition.agency.report(condition.pruned_heads)
        except Exception as error:
            pl_module.record.add_failure(AGENCY_REPORT, error_text(error))
