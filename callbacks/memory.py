"""Model size and cost: parameter count and FLOPs per token always; peak memory on request.

Peak memory is opt-in (``memory.enabled``) because sampling it is not free and
because its meaning depends on the device: on CUDA it is the peak of tensors
allocated during this condition (the peak counter is reset when the condition
starts); on CPU it is the largest resident set size of the whole process seen
while the condition ran (model weights, caches and everything else included).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import psutil
import torch
from torch import nn

from callbacks.common import error_text
from lightning_modules.flops import flops_per_token

PARAMETER_COUNT = "parameter_count"
FLOPS_PER_TOKEN = "flops_per_token"
PEAK_RSS_MB = "peak_rss_mb"
PEAK_CUDA_MB = "peak_cuda_mb"
MB = 2**20  # "MB" in metric names is MiB


def unique_parameter_count(model: nn.Module) -> int:
    """Parameters of ``model``, counting weights that share storage (tied embeddings) once."""
    seen: set[tuple[str, int]] = set()
    total = 0
    for parameter in model.parameters():
        key = (str(parameter.device), parameter.data_ptr())
        if parameter.numel() == 0 or key in seen:
            continue
        seen.add(key)
        total += parameter.numel()
    return total


def mean_decoding_context(prompt_lengths: list[int], num_tokens: int) -> float:
    """Mean number of attended positions over the decoding steps of all samples.

    New token t (0-based) is produced by a forward pass attending to
    prompt_length + t positions, so the mean over t = 0..num_tokens-1 is
    prompt_length + (num_tokens - 1) / 2; FLOPs are linear in the context, so
    FLOPs at this mean context are the mean FLOPs per generated token.
    """
    if not prompt_lengths:
        raise ValueError("no samples were generated")
    return sum(prompt_lengths) / len(prompt_lengths) + (num_tokens - 1) / 2


class MemoryMonitor(L.Callback):
    """Records condition metrics ``parameter_count`` and ``flops_per_token``, and with ``enabled``
    ``peak_rss_mb`` (process resident memory, any device) and on CUDA ``peak_cuda_mb``.

    ``parameter_count`` is of the condition's model: in ``mask`` mode pruned heads
    keep their weights (they are gated), so only ``remove`` mode lowers it;
    ``flops_per_token`` counts the kept heads in both modes.

    Args:
        enabled: also measure peak memory (RSS sampled at every batch end; CUDA peak allocated).
    """

    def __init__(self, enabled: bool = False) -> None:
        super().__init__()
        self.enabled = enabled
        self._prompt_lengths: list[int] = []
        self._num_tokens = 0
        self._peak_rss = 0
        self._cuda_device: torch.device | None = None
        self._errors: dict[str, str] = {}

    def _sample_rss(self) -> None:
        try:
            self._peak_rss = max(self._peak_rss, psutil.Process().memory_info().rss)
        except Exception as error:  # the first error is kept and recorded at the end
            self._errors.setdefault(PEAK_RSS_MB, error_text(error))

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._prompt_lengths, self._num_tokens, self._peak_rss, self._errors = [], 0, 0, {}
        self._cuda_device = None
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
                self._errors[PEAK_CUDA_MB] = error_text(error)

    def on_predict_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._prompt_lengths.extend(len(ids) for ids in outputs.prompt_ids)
        self._num_tokens = int(outputs.continuation_ids.shape[1])
        if self.enabled:
            self._sample_rss()

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        record = pl_module.record
        condition = pl_module.condition
        try:
            record.add_condition_metric(PARAMETER_COUNT, unique_parameter_count(condition.model))
        except Exception as error:
            record.add_failure(PARAMETER_COUNT, error_text(error))
        try:
            context = mean_decoding_context(self._prompt_lengths, self._num_tokens)
            record.add_condition_metric(FLOPS_PER_TOKEN,
                                        flops_per_token(condition.layout, condition.pruned_heads, context))
        except Exception as error:
            record.add_failure(FLOPS_PER_TOKEN, error_text(error))
        if not self.enabled:
            return
        self._sample_rss()
        if PEAK_RSS_MB in self._errors:
            record.add_failure(PEAK_RSS_MB, self._errors[PEAK_RSS_MB])
        else:
            record.add_condition_metric(PEAK_RSS_MB, self._peak_rss / MB)
        if PEAK_CUDA_MB in self._errors:
            record.add_failure(PEAK_CUDA_MB, self._errors[PEAK_CUDA_MB])
        elif self._cuda_device is not None:
            try:
                torch.cuda.synchronize(self._cuda_device)
                record.add_condition_metric(PEAK_CUDA_MB, torch.cuda.max_memory_allocated(self._cuda_device) / MB)
            except Exception as error:
                record.add_failure(PEAK_CUDA_MB, error_text(error))
