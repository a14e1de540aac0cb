"""The metric catalogue: every number a condition can record, and how to read it.

One entry per metric. Callbacks take their names from here (a record holding a
name that is not catalogued is refused), the statistics choose the unit of
analysis, scale and direction from here, and the plots, the summary and the
console table choose what to show by each entry's ``views``. Adding a metric is
one entry here plus the callback that measures it.

Fields:

* ``measured_per``: what one recorded value is: one ``timing`` repeat (one timed
  decode of one batch), one ``sample`` (a prompt x iteration), or the whole
  ``condition``.
* ``analysed_per``: the unit the statistics treat as independent. Samples are
  averaged per ``prompt`` (iterations are repeats within a prompt); timing
  repeats are averaged per ``session`` (the repeats of one timed run share its
  drift; arms timed in one session pair by round); a condition is one value, unless its record keeps
  the value per evaluation ``window`` (corpus perplexity), which every arm
  scores alike and the report pairs.
* ``direction``: ``higher`` or ``lower`` is better, or ``reference``: closeness
  to the unpruned model's value on the same prompt is what counts (diversity:
  more distinct n-grams than the original model is not "better" text).
* ``scale``: ``log`` for ratios (perplexity, speed): statistics work on the log
  and report geometric-mean ratios, axes are logarithmic.
* ``tested``: whether the report runs tests on it. Costs follow from the pruned
  heads by arithmetic and are only described.
"""

from __future__ import annotations

from dataclasses import dataclass

MEASURED_PER = ("timing", "sample", "condition")
ANALYSED_PER = ("session", "prompt", "condition", "window", "sequence")
DIRECTIONS = ("higher", "lower", "reference")
SCALES = ("log", "linear")
# Where a metric is shown: the end-of-run console table, the summary's cell table, the metrics-vs-level
# figure, the agency-vs-baseline gain figures.
VIEWS = ("console", "table", "level_plot", "gain_plot")


@dataclass(frozen=True)
class MetricSpec:
    """One measured quantity and how to read it."""

    name: str
    label: str
    unit: str
    part: str  # the record part (callback) that produces it
    kind: str  # speed, quality, diversity, cost or memory
    measured_per: str
    analysed_per: str
    direction: str
    scale: str
    tested: bool
    views: tuple[str, ...] = ()
    description: str = ""

    @property
    def sign(self) -> int:
        """+1 when a larger value is better, -1 when smaller is (0 for reference-relative metrics)."""
        return {"higher": 1, "lower": -1}.get(self.direction, 0)

    @property
    def axis_label(self) -> str:
        reading = {
            "higher": "higher is better",
            "lower": "lower is better",
            "reference": "closer to unpruned is better",
        }[self.direction]
        unit = f", {self.unit}" if self.unit else ""
        return f"{self.label} ({reading}{unit})"


def _speed(name: str, label: str, unit: str, direction: str, description: str) -> MetricSpec:
    return MetricSpec(
        name,
        label,
        unit,
        "speed",
        "speed",
        "timing",
        "session",  # a session's repeats share its drift: averaged within it, the session is the unit
        direction,
        "log",
        True,
        ("console", "table", "level_plot", "gain_plot"),
        description,
    )


def _diversity(name: str, label: str, description: str, views: tuple[str, ...] = ()) -> MetricSpec:
    return MetricSpec(
        name,
        label,
        "",
        "diversity",
        "diversity",
        "sample",
        "prompt",
        "reference",
        "linear",
        True,
        views,
        description,
    )


def _cost(name: str, label: str, unit: str, description: str, views: tuple[str, ...] = ()) -> MetricSpec:
    return MetricSpec(
        name,
        label,
        unit,
        "memory",
        "cost",
        "condition",
        "condition",
        "lower",
        "linear",
        False,
        views,
        description,
    )


CATALOGUE: tuple[MetricSpec, ...] = (
    _speed(
        "tokens_per_second",
        "tokens/s",
        "tokens/s per row",
        "higher",
        "(new tokens - 1) / decode time of one timed batch, the first token excluded (its time is prefill)",
    ),
    _speed(
        "first_token_latency_s",
        "first-token latency",
        "s",
        "lower",
        "start of a timed decode to its first new token: prefill plus one sampling step",
    ),
    _speed("generation_time_s", "generation time", "s", "lower", "wall-clock time of one timed decode"),
    MetricSpec(
        "reference_perplexity",
        "reference perplexity",
        "",
        "quality",
        "quality",
        "sample",
        "prompt",
        "lower",
        "log",
        True,
        ("console", "table", "level_plot", "gain_plot"),
        "perplexity of the continuation under the unpruned model, given the prompt",
    ),
    MetricSpec(
        "corpus_perplexity",
        "corpus perplexity",
        "",
        "quality",
        "quality",
        "condition",
        "window",
        "lower",
        "log",
        True,
        ("console", "table", "level_plot", "gain_plot"),
        "perplexity of the condition's own model on the held-out evaluation text (the record keeps each "
        "window's mean NLL: the paired unit of corpus comparisons)",
    ),
    MetricSpec(
        "corpus_kl",
        "KL from unpruned",
        "nats/token",
        "quality",
        "quality",
        "condition",
        "window",
        "lower",
        "linear",
        True,
        ("table", "level_plot"),
        "mean KL divergence of the condition's next-token distribution from the unpruned model's on the "
        "evaluation windows (the record keeps each window's mean: paired by window)",
    ),
    MetricSpec(
        "induction_loss",
        "induction loss",
        "nats/token",
        "quality",
        "quality",
        "condition",
        "sequence",
        "lower",
        "linear",
        True,
        ("table",),
        "mean NLL on the second copy of random token sequences shown twice (the record keeps each "
        "sequence's mean: paired by sequence)",
    ),
    MetricSpec(
        "induction_accuracy",
        "induction accuracy",
        "share",
        "quality",
        "quality",
        "condition",
        "sequence",
        "higher",
        "linear",
        True,
        ("table",),
        "share of the second copy's tokens that are the model's most likely next token (per sequence)",
    ),
    MetricSpec(
        "calibration_perplexity",
        "calibration-text perplexity",
        "",
        "quality",
        "quality",
        "condition",
        "condition",
        "lower",
        "log",
        False,
        (),
        "perplexity of an arm without agency on the calibration text: what a frontier arm is chosen by "
        "(never the evaluation text); described, not tested",
    ),
    _diversity("distinct_1", "distinct-1", "distinct token unigrams / unigrams of the continuation"),
    _diversity(
        "distinct_2",
        "distinct-2",
        "distinct token bigrams / bigrams of the continuation",
        ("console", "table", "level_plot", "gain_plot"),
    ),
    _diversity("distinct_3", "distinct-3", "distinct token trigrams / trigrams of the continuation"),
    _diversity(
        "type_token_ratio", "type-token ratio", "distinct words / words of the continuation", ("gain_plot",)
    ),
    _diversity(
        "repetition_rate",
        "repetition rate",
        "share of 4-grams that already occurred earlier",
        ("table", "level_plot", "gain_plot"),
    ),
    _cost(
        "parameters_executed",
        "parameters executed",
        "count",
        "parameters the forward pass multiplies through (mask mode: every head, pruned ones gated to 0)",
        ("console",),
    ),
    _cost(
        "parameters_after_removal",
        "parameters after removal",
        "count",
        "parameters once the pruned heads are sliced out (what remove mode runs)",
    ),
    _cost(
        "flops_per_token_executed",
        "FLOPs per token executed",
        "FLOPs",
        "forward FLOPs per generated token of what actually runs (mask mode computes every head)",
    ),
    _cost(
        "flops_per_token_after_removal",
        "FLOPs per token after removal",
        "FLOPs",
        "forward FLOPs per generated token with the pruned heads absent",
    ),
    _cost(
        "kv_cache_values_per_token_after_removal",
        "key/value cache per token after removal",
        "values",
        "key and value entries cached per token position and row once the pruned heads are sliced out (a "
        "key/value head stays while one query head of its group does; x bytes per value of the precision for "
        "memory; mask mode caches every head)",
    ),
    MetricSpec(
        "peak_rss_mb",
        "peak resident memory",
        "MiB",
        "memory",
        "memory",
        "condition",
        "condition",
        "lower",
        "linear",
        False,
        ("level_plot",),
        "largest resident set size of the process sampled during this condition (CPU)",
    ),
    MetricSpec(
        "peak_cuda_mb",
        "peak CUDA memory",
        "MiB",
        "memory",
        "memory",
        "condition",
        "condition",
        "lower",
        "linear",
        False,
        ("level_plot",),
        "torch.cuda.max_memory_allocated, reset when this condition starts",
    ),
)

METRICS: dict[str, MetricSpec] = {m.name: m for m in CATALOGUE}
PARTS: tuple[str, ...] = tuple(sorted({m.part for m in CATALOGUE} | {"agency"}))  # the record's parts


# What the report derives from the samples and compares like a metric, though no record holds it (so a record
# naming it is refused like any uncatalogued name).
FAILED_SAMPLES = "failed_samples"
DERIVED: dict[str, MetricSpec] = {
    FAILED_SAMPLES: MetricSpec(
        FAILED_SAMPLES,
        "failed samples",
        "share of a prompt's samples",
        "quality",
        "quality",
        "sample",
        "prompt",
        "lower",
        "linear",
        False,
        (),
        "samples whose generation or reference perplexity failed (a non-finite value is a failure): each is "
        "the worst outcome of its quality comparisons, and the report compares the arms' shares",
    )
}


def spec(name: str) -> MetricSpec:
    """The catalogue entry of ``name`` (or of a metric the report derives); an unknown name is a programming
    error, not data."""
    try:
        return METRICS[name] if name in METRICS else DERIVED[name]
    except KeyError:
        raise KeyError(f"metric '{name}' is not in the catalogue (record/catalogue.py)") from None


def names(
    part: str | None = None, measured_per: str | None = None, view: str | None = None, kind: str | None = None
) -> tuple[str, ...]:
    """Catalogue names matching every given attribute, in catalogue order."""
    return tuple(
        m.name
        for m in CATALOGUE
        if (part is None or m.part == part)
        and (measured_per is None or m.measured_per == measured_per)
        and (view is None or view in m.views)
        and (kind is None or m.kind == kind)
    )


def _check_catalogue() -> None:
    for m in CATALOGUE:
        assert m.measured_per in MEASURED_PER and m.analysed_per in ANALYSED_PER, m
        assert m.direction in DIRECTIONS and m.scale in SCALES and set(m.views) <= set(VIEWS), m
    assert len(METRICS) == len(CATALOGUE), "duplicate metric names in the catalogue"


_check_catalogue()
