"""What a condition costs: parameters and FLOPs per token (executed and after removal), and peak memory.

Mask mode gates pruned heads to zero but still computes them, so its cost is
recorded twice: what actually runs (``*_executed``: every head) and what would
run once the pruned heads are sliced out (``*_after_removal``, what remove mode
runs). Remove mode executes exactly the latter.

Peak memory is opt-in (``memory.enabled``) and per condition: on CUDA the peak
allocation counter is reset when the condition starts and read when it ends; on
CPU the resident set size of the process is sampled at the condition's start,
after every batch and at its end, and the largest sample is kept (it includes the
model weights and everything else the process holds). The record's ``notes`` say
which was measured.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import psutil
import torch

from callbacks.base import MeasuringCallback, error_text
from callbacks.costs import flops_per_token, kv_cache_values_per_token
from callbacks.protocols import Experiment, Generated
from record.errors import is_measurement_failure

PEAK_RSS_MB = "peak_rss_mb"
PEAK_CUDA_MB = "peak_cuda_mb"
MB = 2**20  # "MB" in metric names is MiB


def mean_decoding_context(prompt_lengths: list[int], num_tokens: int) -> float:
    """Mean number of attended positions over the decoding steps of all samples.

    New token t (0-based) is produced by a forward attending to prompt_length + t
    positions, so the mean over t is prompt_length + (num_tokens - 1) / 2; FLOPs
    are linear in the context, so FLOPs at this mean are the mean FLOPs per token.
    """
    if not prompt_lengths:
        raise ValueError("no samples were generated")
    return sum(prompt_lengths) / len(prompt_lengths) + (num_tokens - 1) / 2


class MemoryMonitor(MeasuringCallback):
    """Records ``parameters_executed``, ``parameters_after_removal``, ``flops_per_token_executed``,
    ``flops_per_token_after_removal`` and ``kv_cache_values_per_token_after_removal`` always; with
    ``enabled``, ``peak_rss_mb`` and on CUDA ``peak_cuda_mb``.

    Args:
        enabled: also measure peak memory (resident memory is sampled during the run).
    """

    part = "memory"

    def __init__(self, enabled: bool = False) -> None:
        super().__init__()
        self.enabled = bool(enabled)
        self._prompt_lengths: list[int] = []
        self._num_tokens = 0
        self._peak_rss = 0
        self._cuda_device: torch.device | None = None

    def _sample_rss(self) -> None:
        try:
            self._peak_rss = max(self._peak_rss, psutil.Process().memory_info().rss)
        except Exception as error:  # the first error is kept
            if not is_measurement_failure(error):
                raise
            if not any(f.metric == PEAK_RSS_MB for f in self._measured.failures):
                self._measured.fail(PEAK_RSS_MB, error_text(error))

    def begin(self, trainer: L.Trainer, module: Experiment) -> None:
        """Reset the peaks before the first batch, so the peak belongs to this condition alone."""
        self._prompt_lengths, self._num_tokens, self._peak_rss, self._cuda_device = [], 0, 0, None
        if not self.enabled:
            return
        self._sample_rss()
        device = trainer.strategy.root_device
        if device.type == "cuda":
            try:
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
                self._cuda_device = device
            except Exception as error:
                if not is_measurement_failure(error):
                    raise
                self._measured.fail(PEAK_CUDA_MB, error_text(error))

    def on_predict_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Generated,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Keep each batch's prompt lengths: the decoding context the FLOPs per token are computed at."""
        self._prompt_lengths.extend(len(ids) for ids in outputs.prompt_ids)
        self._num_tokens = int(outputs.continuation_ids.shape[1])
        if self.enabled:
            self._sample_rss()

    def finish(self, trainer: L.Trainer, module: Experiment) -> None:
        """Peak memory and the model's cost (parameters executed and left, KV cache, FLOPs per token), once per condition."""
        measured = self._measured
        layout, pruned, computed, executed, after_removal = module.cost_inputs()
        measured.add_condition("parameters_executed", executed)
        measured.add_condition("parameters_after_removal", after_removal)
        measured.add_condition(
            "kv_cache_values_per_token_after_removal", kv_cache_values_per_token(layout, pruned)
        )
        try:
            context = mean_decoding_context(self._prompt_lengths, self._num_tokens)
            measured.add_condition(
                "flops_per_token_executed", flops_per_token(layout, [] if computed else pruned, context)
            )
            measured.add_condition("flops_per_token_after_removal", flops_per_token(layout, pruned, context))
        except Exception as error:
            if not is_measurement_failure(error):
                raise
            measured.fail("flops_per_token_executed", error_text(error))
            measured.fail("flops_per_token_after_removal", error_text(error))
        if not self.enabled:
            return
        self._sample_rss()
        if not any(f.metric == PEAK_RSS_MB for f in measured.failures):
            measured.add_condition(PEAK_RSS_MB, self._peak_rss / MB)
            measured.notes[PEAK_RSS_MB] = (
                "largest resident set size of the process sampled at this condition's "
                "start, after each batch and at its end (includes the model weights)"
            )
        if self._cuda_device is not None:
            try:
                torch.cuda.synchronize(self._cuda_device)
                measured.add_condition(PEAK_CUDA_MB, torch.cuda.max_memory_allocated(self._cuda_device) / MB)
                measured.notes[PEAK_CUDA_MB] = (
                    "torch.cuda.max_memory_allocated after "
                    "torch.cuda.reset_peak_memory_stats at this condition's start"
                )
            except Exception as error:
                if not is_measurement_failure(error):
                    raise
                measured.fail(PEAK_CUDA_MB, error_text(error))
