"""Output quality: how plausible each continuation is to the unpruned model, and corpus perplexity.

``reference_perplexity`` scores what the condition *wrote* with the unpruned
reference model (same weights, every head, no agency), so a pruned model that
drifts into text the original finds unlikely scores high. ``corpus_perplexity``
scores how well the condition's *own* model predicts the held-out evaluation
text; each evaluation window's mean NLL is kept beside it (``corpus_windows``),
because every arm scores the same windows and the report pairs them. Both are
ratios of likelihoods: the report analyses them on the log scale.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
from torchmetrics.functional.text import perplexity

from callbacks.base import MeasuringCallback, error_text, experiment_of
from callbacks.protocols import Experiment, Generated
from callbacks.samples import measurable_rows
from record.errors import is_measurement_failure
from record.schema import CorpusWindows

REFERENCE_PERPLEXITY = "reference_perplexity"
CORPUS_PERPLEXITY = "corpus_perplexity"
IGNORE_INDEX = -100
# The config key that switches each metric off (the callback's LightningCLI group is ``quality``), so a
# metric that was not wanted reads "off" and never "failed".
SWITCHES = {
    REFERENCE_PERPLEXITY: "quality.reference_perplexity",
    CORPUS_PERPLEXITY: "quality.corpus_perplexity",
}


class QualityMonitor(MeasuringCallback):
    """Records ``reference_perplexity`` per sample and ``corpus_perplexity`` per condition.

    The per-sample value is torchmetrics' perplexity of one row: exp of the mean
    negative log-likelihood of the continuation tokens under the reference
    model, given the prompt (prompt and padding positions are ignored).

    Args:
        reference_perplexity: score every continuation with the unpruned reference model.
        corpus_perplexity: score the condition's model on the evaluation text (cached per model state).
    """

    part = "quality"

    def __init__(self, reference_perplexity: bool = True, corpus_perplexity: bool = True) -> None:
        super().__init__()
        self.reference_perplexity = bool(reference_perplexity)
        self.corpus_perplexity = bool(corpus_perplexity)

    def on_predict_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Generated,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Score each continuation with the unpruned reference; a batch that cannot be scored fails its rows, never the condition."""
        if not self.reference_perplexity:
            return
        rows = list(measurable_rows(self._measured, outputs, (REFERENCE_PERPLEXITY,)))
        if not rows:
            return
        try:
            logits, targets = experiment_of(pl_module).reference_logits(outputs)
        except Exception as error:  # the whole batch could not be scored: every row says why
            if not is_measurement_failure(error):
                raise
            for _row, key in rows:
                self._measured.fail_sample(key, REFERENCE_PERPLEXITY, error_text(error))
            return
        values = []
        for row, key in rows:
            try:
                value = float(
                    perplexity(logits[row : row + 1], targets[row : row + 1], ignore_index=IGNORE_INDEX)
                )
                self._measured.add_sample(key, REFERENCE_PERPLEXITY, value)
                values.append(value)
            except Exception as error:
                if not is_measurement_failure(error):
                    raise
                self._measured.fail_sample(key, REFERENCE_PERPLEXITY, error_text(error))
        if values:
            self.log_values(
                trainer, {REFERENCE_PERPLEXITY: sum(values) / len(values)}, step=batch_idx, prefix=self.part
            )

    def finish(self, trainer: L.Trainer, module: Experiment) -> None:
        """Runs while the condition's state is still attached to the model."""
        if not self.corpus_perplexity:
            return
        try:
            score = module.corpus_score()
            self._measured.add_condition(CORPUS_PERPLEXITY, score.perplexity)
        except Exception as error:
            if not is_measurement_failure(error):
                raise
            self._measured.fail(CORPUS_PERPLEXITY, error_text(error))
            return
        windows = score.window_mean_nll
        if CORPUS_PERPLEXITY in self._measured.condition_metrics and all(math.isfinite(v) for v in windows):
            self._measured.corpus_windows = CorpusWindows(len(windows), windows, list(score.window_tokens))
