"""The catalogue of measured metrics: their names, labels and which direction is better.

Every statement of the form "agency is better" depends on a metric's direction,
so that knowledge lives in exactly one place and everything else asks here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """One measured quantity and how to read it."""

    name: str
    label: str
    higher_is_better: bool
    kind: str  # "speed", "quality", "memory" or "size"
    per_sample: bool

    @property
    def sign(self) -> int:
        """+1 when a larger value is better, -1 otherwise: multiply a difference by it to get a gain."""
        return 1 if self.higher_is_better else -1

    @property
    def axis_label(self) -> str:
        direction = "higher is better" if self.higher_is_better else "lower is better"
        return f"{self.label} ({direction})"


SAMPLE_METRICS: tuple[Metric, ...] = (
    Metric("tokens_per_second", "tokens/s", True, "speed", True),
    Metric("first_token_latency_s", "first-token latency (s)", False, "speed", True),
    Metric("generation_time_s", "generation time (s)", False, "speed", True),
    Metric("reference_perplexity", "reference perplexity", False, "quality", True),
    Metric("distinct_1", "distinct-1", True, "quality", True),
    Metric("distinct_2", "distinct-2", True, "quality", True),
    Metric("distinct_3", "distinct-3", True, "quality", True),
    Metric("type_token_ratio", "type-token ratio", True, "quality", True),
    Metric("repetition_rate", "repetition rate", False, "quality", True),
)

CONDITION_METRICS: tuple[Metric, ...] = (
    Metric("throughput_tokens_per_second", "throughput (tokens/s, all rows)", True, "speed", False),
    Metric("corpus_perplexity", "corpus perplexity", False, "quality", False),
    Metric("parameter_count", "parameter count", False, "size", False),
    Metric("flops_per_token", "FLOPs per token", False, "size", False),
    Metric("peak_rss_mb", "peak RSS (MB)", False, "memory", False),
    Metric("peak_cuda_mb", "peak CUDA memory (MB)", False, "memory", False),
)

ALL_METRICS: dict[str, Metric] = {m.name: m for m in (*SAMPLE_METRICS, *CONDITION_METRICS)}
SAMPLE_METRIC_NAMES: tuple[str, ...] = tuple(m.name for m in SAMPLE_METRICS)
CONDITION_METRIC_NAMES: tuple[str, ...] = tuple(m.name for m in CONDITION_METRICS)
QUALITY_METRIC_NAMES: tuple[str, ...] = tuple(m.name for m in ALL_METRICS.values() if m.kind == "quality")

# Memory is shown from the first of these that any cell measured.
MEMORY_PREFERENCE: tuple[str, ...] = ("peak_rss_mb", "peak_cuda_mb", "parameter_count")


def metric(name: str) -> Metric:
    """Look a metric up; an unknown name is a programming error, not data to guess about."""
    return ALL_METRICS[name]
