"""Output quality: how plausible each continuation is to the unpruned model, and corpus perplexity.

``reference_perplexity`` scores what the condition *wrote* with the unpruned
reference model (same weights, every head, no agency), so a pruned model that
drifts into text the original finds unlikely scores high. ``corpus_perplexity``
scores how well the condition's *own* model state predicts a held-out text.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from torchmetrics.functional.text import perplexity

from callbacks.common import error_text, measurable_rows

REFERENCE_PERPLEXITY = "reference_perplexity"
CORPUS_PERPLEXITY = "corpus_perplexity"
IGNORE_INDEX = -100


class QualityMonitor(L.Callback):
    """Records ``reference_perplexity`` per sample and ``corpus_perplexity`` per condition.

    The per-sample value is torchmetrics' perplexity of one row: exp of the mean
    negative log-likelihood of the continuation tokens under the reference
    model, given the prompt (prompt and padding positions are -100, ignored).

    Args:
        reference_perplexity: score every continuation with the unpruned reference model.
        corpus_perplexity: score the condition's model on the evaluation text (cached per model state).
    """

    def __init__(self, reference_perplexity: bool = True, corpus_perplexity: bool = True) -> None:
        super().__init__()
        self.reference_perplexity = reference_perplexity
        self.corpus_perplexity = corpus_perplexity

    def on_predict_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self.reference_perplexity:
            return
        record = pl_module.record
        rows = list(measurable_rows(record, outputs, (REFERENCE_PERPLEXITY,)))
        if not rows:
            return
        try:
            logits, targets = pl_module.reference_logits(outputs)
        except Exception as error:  # the whole batch could not be scored: every row says why
            for _row, key in rows:
                record.add_sample_failure(key, REFERENCE_PERPLEXITY, error_text(error))
            return
        for row, key in rows:
            try:
                value = perplexity(logits[row : row + 1], targets[row : row + 1], ignore_index=IGNORE_INDEX)
                record.add_sample_metric(key, REFERENCE_PERPLEXITY, float(value))
            except Exception as error:
                record.add_sample_failure(key, REFERENCE_PERPLEXITY, error_text(error))

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Runs here, not in teardown: the condition's pruned state is still attached to the model."""
        if not self.corpus_perplexity:
            return
        try:
            pl_module.record.add_condition_metric(CORPUS_PERPLEXITY, pl_module.corpus_perplexity())
        except Exception as error:
            pl_module.record.add_failure(CORPUS_PERPLEXITY, error_text(error))
