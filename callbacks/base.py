"""The measuring callback: it measures its own part of the record, returns it, and logs it.

A measuring callback never writes into a shared record. During the run it
collects values for its part; ``result`` finishes the part once (idempotent) and
returns it as ``record.schema.Measurements``. The record writer asks every
measuring callback for its result and composes the record, so the record does
not depend on the order of the callback list. Values are also logged through the
Trainer's loggers (W&B), under ``<part>/<metric>``.

Every constructor argument of a measuring callback is part of the condition's
identity (its config group in LightningCLI; ``init_arguments`` outside it) unless
``record.identity.NOT_RESULT_SETTINGS`` says it cannot change a result.
"""

from __future__ import annotations

import inspect
from typing import ClassVar, cast

import lightning as L

from callbacks.protocols import Experiment
from record.errors import is_measurement_failure
from record.identity import init_arguments
from record.schema import Measurements


def error_text(error: BaseException) -> str:
    """One line naming the exception type, so a failure says what went wrong and not just that it did."""
    message = " ".join(str(error).split())
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


class MeasuringCallback(L.Callback):
    """Base of the callbacks that measure: one part of the record each (``part``)."""

    part: ClassVar[str]

    def __init__(self) -> None:
        frame = inspect.currentframe()
        caller = frame.f_back if frame else None  # the subclass's __init__, its arguments not yet reassigned
        self.init_arguments = init_arguments(type(self), caller.f_locals) if caller else {}
        super().__init__()
        self._measured = Measurements(self.part)
        self._result: Measurements | None = None

    # -- what subclasses implement -------------------------------------------------------------
    def begin(self, trainer: L.Trainer, module: Experiment) -> None:
        """At the start of the run (before any batch)."""

    def finish(self, trainer: L.Trainer, module: Experiment) -> None:
        """After the last batch: condition-level measurements into ``self._measured``."""

    # -- the protocol ------------------------------------------------------------------------------
    @property
    def measured(self) -> Measurements:
        return self._measured

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._measured = Measurements(self.part)
        self._result = None
        self.begin(trainer, experiment_of(pl_module))

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.result(trainer, experiment_of(pl_module))

    def result(self, trainer: L.Trainer, module: Experiment) -> Measurements:
        """The finished part (computed on the first call, the same object after)."""
        if self._result is None:
            try:
                self.finish(trainer, module)
            except Exception as error:  # a measurement error is data, not a crash
                if not is_measurement_failure(error):
                    raise
                self._measured.fail(self.part, error_text(error))
            self._result = self._measured
            self.log_values(trainer, self._measured.condition_metrics, prefix=self.part)
        return self._result

    def partial(self) -> Measurements:
        """What was measured so far, for the record of a condition that did not finish."""
        return self._measured

    @staticmethod
    def log_values(
        trainer: L.Trainer, values: dict[str, float], step: int | None = None, prefix: str | None = None
    ) -> None:
        """Log through every logger of the Trainer; a logger that fails never costs the measurement."""
        if not values:
            return
        named = {f"{prefix}/{k}" if prefix else k: v for k, v in values.items()}
        for logger in trainer.loggers:
            try:
                logger.log_metrics(named, step=step)
            except Exception:  # noqa: BLE001 - W&B trouble is reported by the record writer
                pass


def experiment_of(module: L.LightningModule) -> Experiment:
    """The module a hook receives, as what the measuring callbacks need of it (``callbacks/protocols.py``)."""
    return cast(Experiment, module)


def callbacks_of(trainer: L.Trainer) -> list[L.Callback]:
    """The Trainer's callbacks (Lightning sets the attribute without a type)."""
    return cast(list[L.Callback], trainer.callbacks)  # type: ignore[attr-defined]


def measuring_callbacks(trainer: L.Trainer) -> list[MeasuringCallback]:
    return [cb for cb in callbacks_of(trainer) if isinstance(cb, MeasuringCallback)]
