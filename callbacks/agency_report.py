"""The agency layer's state at the end of generation, into the record's ``agency`` part."""

from __future__ import annotations

import lightning as L

from callbacks.base import MeasuringCallback, error_text, experiment_of
from callbacks.protocols import Experiment
from record.errors import is_measurement_failure


class AgencyReporter(MeasuringCallback):
    """Takes the agency report when generation ends (``on_predict_epoch_end``), before any evaluation pass.

    Lightning runs every callback's ``on_predict_epoch_end`` before any
    ``on_predict_end``, where corpus perplexity is scored, so the report always
    describes generation; the module starts its counts after the warm-up and the
    timing. Baseline conditions have no agency part.
    """

    part = "agency"

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._snapshot(experiment_of(pl_module))

    def _snapshot(self, module: Experiment) -> None:
        if self._measured.agency is not None:
            return
        try:
            self._measured.agency = module.agency_report()
        except Exception as error:
            if not is_measurement_failure(error):
                raise
            self._measured.fail(self.part, error_text(error))

    def finish(self, trainer: L.Trainer, module: Experiment) -> None:
        if self._measured.agency is None and not self._measured.failures:
            self._snapshot(module)
