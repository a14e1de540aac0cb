"""The agency layer's signals from the calibration text: usual utilization, importance, ablation evidence.

* Each head's *calibrated level*: a quantile of the running utilization it
  reaches along the calibration text, with the same running average the layer
  keeps at run time. Overload is measured against it (relative mode).
* *Importance* for prune consent: the gradient importance of Michel et al.
  (2019), normalised per layer, as the ``gradient`` ranking uses it.
* *Misalignment*: a head starts misaligned only when gating it to 0 lowers the
  calibration loss with a 95% interval below zero. Ablating every head costs a
  forward over the windows per head, so candidates are screened first by the
  first-order estimate (the heads whose gradient says removal lowers the loss
  most) on the even windows, and tested by real ablation on the odd windows, so
  that the screen cannot select its own noise.
"""

from __future__ import annotations

import torch

from lightning_modules.heads.agency import AgencyConfig, AgencySignals
from lightning_modules.heads.calibration import AttentionStatistics
from lightning_modules.heads.calibration_context import CalibrationContext
from lightning_modules.heads.importance import layer_normalised
from record.schema import MisalignedHead

Head = tuple[int, int]


def utilization_levels(stats: AttentionStatistics, quantile: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean focus, calibrated level = ``quantile`` of the running utilization), each [layers, heads]."""
    return stats.focus, torch.quantile(stats.utilization, quantile, dim=-1)


def importance(signed_gradients: torch.Tensor) -> torch.Tensor:
    """Mean |dLoss/dGate| over windows, normalised by its L2 norm within each layer (the ``gradient`` ranking)."""
    return layer_normalised(signed_gradients.abs().mean(0))


def misalignment_evidence(
    context: CalibrationContext, candidates: int | None
) -> tuple[list[MisalignedHead], int]:
    """Heads whose ablation lowers the loss on the odd windows (95% interval < 0), and how many were tested."""
    if len(context.windows) < 4:  # two windows to screen on and two to test on, at least
        return [], 0
    # dLoss/dGate on the even windows: removal (gate 1 -> 0) changes the loss by about -g
    estimate = context.gate_gradients()[0::2].mean(0)
    flat = estimate.flatten()
    order = torch.argsort(flat, descending=True, stable=True).tolist()
    heads_per_layer = estimate.shape[1]
    screened = [i for i in order if flat[i] > 0]
    if candidates is not None:
        screened = screened[:candidates]
    tested: list[Head] = [(i // heads_per_layer, i % heads_per_layer) for i in screened]
    effects = context.ablation_effects(tested, part="odd")
    found = [
        MisalignedHead(e.head[0], e.head[1], e.mean, e.ci_low, e.ci_high) for e in effects if e.ci_high < 0
    ]
    return found, len(tested)


def agency_signals(context: CalibrationContext, config: AgencyConfig) -> AgencySignals:
    """Everything the controller's calibration needs, read from the context (every gate at 1)."""
    focus, level = utilization_levels(
        context.attention_statistics(config.utilization_alpha), config.overload_quantile
    )
    misaligned, tested = ([], 0)
    if config.misalignment:
        misaligned, tested = misalignment_evidence(context, config.misalignment_candidates)
    return AgencySignals(focus, level, importance(context.gate_gradients()), misaligned, tested)
