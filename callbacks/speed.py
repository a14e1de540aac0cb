"""Generation speed: per-sample decoding rate and latency, and the condition's overall throughput.

Decoding is batched, so every row of a batch shares that batch's timings; the
per-sample values are still recorded per sample so that paired statistics can
match samples across conditions.
"""

from __future__ import annotations

from typing import Any

import lightning as L

from callbacks.common import error_text, measurable_rows

TOKENS_PER_SECOND = "tokens_per_second"
FIRST_TOKEN_LATENCY = "first_token_latency_s"
GENERATION_TIME = "generation_time_s"
THROUGHPUT = "throughput_tokens_per_second"
SAMPLE_METRICS = (TOKENS_PER_SECOND, FIRST_TOKEN_LATENCY, GENERATION_TIME)


class SpeedMonitor(L.Callback):
    """Records ``tokens_per_second``, ``first_token_latency_s`` and ``generation_time_s`` per sample,
    and ``throughput_tokens_per_second`` per condition.

    ``tokens_per_second`` is (num_tokens - 1) / decode time: the first token is
    excluded because its time is prefill, reported separately as the latency.
    ``throughput_tokens_per_second`` is every generated token of every row
    (failed rows included: their tokens cost the same compute) over the summed
    wall-clock generation time of all batches.
    """

    def __init__(self) -> None:
        super().__init__()
        self._tokens = 0
        self._seconds = 0.0

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._tokens, self._seconds = 0, 0.0

    def on_predict_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        record = pl_module.record
        batch_size, num_tokens = outputs.continuation_ids.shape
        self._tokens += int(batch_size) * int(num_tokens)
        self._seconds += float(outputs.total_time_s)
        for _row, key in measurable_rows(record, outputs, SAMPLE_METRICS):
            try:
                if num_tokens < 2:
                    record.add_sample_failure(key, TOKENS_PER_SECOND, "needs at least 2 new tokens")
                elif outputs.decode_time_s <= 0:
                    record.add_sample_failure(
                        key, TOKENS_PER_SECOND, f"decode time {outputs.decode_time_s} s is not positive")
                else:
                    record.add_sample_metric(key, TOKENS_PER_SECOND, (num_tokens - 1) / outputs.decode_time_s)
            except Exception as error:  # a measurement error is data, not a crash
                record.add_sample_failure(key, TOKENS_PER_SECOND, error_text(error))
            for name, value in ((FIRST_TOKEN_LATENCY, outputs.first_token_latency_s),
                                (GENERATION_TIME, outputs.total_time_s)):
                try:
                    record.add_sample_metric(key, name, value)
                except Exception as error:
                    record.add_sample_failure(key, name, error_text(error))

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        record = pl_module.record
        if self._seconds <= 0:
            record.add_failure(THROUGHPUT, f"no generation time measured ({self._tokens} tokens in "
                                           f"{self._seconds} s)")
            return
        record.add_condition_metric(THROUGHPUT, self._tokens / self._seconds)
