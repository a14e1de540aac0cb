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
from record.identity import flatten
from record.schema import CorpusWindows

REFERENCE_PERPLEXITY = "reference_perplexity"
CORPUS_PERPLEXITY = "corpus_perplexity"
IGNORE_INDEX = -100
# The config key that switches each metric off (the callback's LightningCLI group is ``quality``), so a
# metric that was not wanted reads "off" and never "failed".
CORPUS_KL = "corpus_kl"
INDUCTION_LOSS, INDUCTION_ACCURACY = "induction_loss", "induction_accuracy"
CALIBRATION_PERPLEXITY = "calibration_perplexity"
SWITCHES = {
    REFERENCE_PERPLEXITY: "quality.reference_perplexity",
    CORPUS_PERPLEXITY: "quality.corpus_perplexity",
    CORPUS_KL: "quality.corpus_perplexity",  # scored in the same pass
    INDUCTION_LOSS: "quality.induction",
    INDUCTION_ACCURACY: "quality.induction",
    CALIBRATION_PERPLEXITY: "quality.calibration_perplexity",
}
# An evaluation-only condition (``model.evaluation.only``) generates and times nothing: these read "off".
EVALUATION_ONLY = "model.evaluation.only"


def is_evaluation_only(config: dict[str, Any]) -> bool:
    """Whether a condition's resolved config makes it evaluation-only (no generation, no timing)."""
    return flatten(config).get(EVALUATION_ONLY) is True


class QualityMonitor(MeasuringCallback):
    """Records ``reference_perplexity`` per sample and ``corpus_perplexity`` per condition.

    The per-sample value is torchmetrics' perplexity of one row: exp of the mean
    negative log-likelihood of the continuation tokens under the reference
    model, given the prompt (prompt and padding positions are ignored).

    Args:
        reference_perplexity: score every continuation with the unpruned reference model.
        corpus_perplexity: score the condition's model on the evaluation text (cached per model state), and the
            KL divergence of its predictions from the unpruned model's on the same windows.
        induction: the induction probe (``model.evaluation.induction_*``): loss and accuracy on the second copy.
        calibration_perplexity: perplexity of an arm without agency on the calibration text (what a frontier
            arm is chosen by).
    """

    part = "quality"

    def __init__(
        self,
        reference_perplexity: bool = True,
        corpus_perplexity: bool = True,
        induction: bool = True,
        calibration_perplexity: bool = True,
    ) -> None:
        super().__init__()
        self.reference_perplexity = bool(reference_perplexity)
        self.corpus_perplexity = bool(corpus_perplexity)
        self.induction = bool(induction)
        self.calibration_perplexity = bool(calibration_perplexity)

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
        if self.corpus_perplexity:
            self._corpus(module)
        if self.induction:
            self._induction(module)
        if self.calibration_perplexity:
            self._measure(CALIBRATION_PERPLEXITY, lambda: _perplexity_of(module.calibration_score()))

    def _measure(self, name: str, compute: Any) -> Any:
        """``compute()`` recorded under ``name`` (None: not measured for this arm); a failure is recorded."""
        try:
            value = compute()
        except Exception as error:
            if not is_measurement_failure(error):
                raise
            self._measured.fail(name, error_text(error))
            return None
        if value is not None:
            self._measured.add_condition(name, value)
        return value

    def _corpus(self, module: Experiment) -> None:
        score = None

        def perplexity() -> float:
            nonlocal score
            score = module.corpus_score()
            return score.perplexity

        self._measure(CORPUS_PERPLEXITY, perplexity)
        if score is None:
            return
        windows = score.window_mean_nll
        if CORPUS_PERPLEXITY in self._measured.condition_metrics and all(math.isfinite(v) for v in windows):
            self._measured.corpus_windows = CorpusWindows(len(windows), windows, list(score.window_tokens))
        kl = score.window_mean_kl
        if kl is not None:
            self._measure(CORPUS_KL, lambda: score.kl)
            if CORPUS_KL in self._measured.condition_metrics and all(math.isfinite(v) for v in kl):
                self._measured.unit_values[CORPUS_KL] = kl

    def _induction(self, module: Experiment) -> None:
        try:
            scores = module.induction_score()
        except Exception as error:
            if not is_measurement_failure(error):
                raise
            for name in (INDUCTION_LOSS, INDUCTION_ACCURACY):
                self._measured.fail(name, error_text(error))
            return
        if scores is None:
            return
        loss = [n / t for n, t in zip(scores.nll, scores.tokens, strict=True)]
        accuracy = [c / t for c, t in zip(scores.correct, scores.tokens, strict=True)]
        tokens = sum(scores.tokens)
        self._measure(INDUCTION_LOSS, lambda: sum(scores.nll) / tokens)
        self._measure(INDUCTION_ACCURACY, lambda: sum(scores.correct) / tokens)
        for name, values in ((INDUCTION_LOSS, loss), (INDUCTION_ACCURACY, accuracy)):
            if name in self._measured.condition_metrics and all(math.isfinite(v) for v in values):
                self._measured.unit_values[name] = values


def _perplexity_of(score: Any) -> float | None:
    return None if score is None else score.perplexity
