"""The result record of one condition, as typed dataclasses: every field of the JSON is here.

A record is one JSON file per condition (``records/<condition id>.json``). It
holds raw values at their unit of measurement (per sample, per timing repeat,
per condition), so that every statistic is computed later from records alone,
and failures with their error text, so that no failed measurement is ever
replaced by a number.

Measuring callbacks never write into a shared record: each returns a
``Measurements`` for its own part, and ``compose`` merges the parts with the
header the module provides. Merging is order-free (every metric has exactly one
producing part, lists are sorted), so the same measurements give the same
record in any callback order.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Union

from record.catalogue import METRICS, PARTS
from record.errors import RecordError

SCHEMA_VERSION = 2
STATUSES = ("complete", "incomplete", "failed")
SampleKey = tuple[int, int]  # (prompt_index, iteration)
# What a failure can be about besides a catalogued metric: a whole part, the condition, a generated
# sample, or the saved outputs.
FAILURE_SCOPES = frozenset({"condition", "generation", "outputs", *PARTS})


@dataclass
class Failure:
    """A measurement (or the condition as a whole: ``metric="condition"``) that did not produce a value."""

    metric: str
    error: str


@dataclass
class Sample:
    """One generated continuation: prompt x iteration, with its own paired sampling seed."""

    prompt_index: int
    iteration: int
    seed: int
    prompt: str
    continuation: str
    prompt_tokens: int
    prompt_tokens_dropped: int = 0  # left-truncated to fit the context
    metrics: dict[str, float] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> SampleKey:
        return (self.prompt_index, self.iteration)


@dataclass
class TimingRepeat:
    """One timed decode of the timed batch; ``position``: its place in the round of arms timed together;
    ``session``: the timing session it was measured in ("" in a one-session timing: the Timing's ``session``)."""

    repeat: int
    position: int
    metrics: dict[str, float] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    session: str = ""


@dataclass
class Timing:
    """Speed has its own unit, the timing session: each repeat is one timed decode of one batch in one session.

    ``schedule="interleaved"``: the arms listed in ``arms`` were timed in the same
    process, round by round with their positions counterbalanced, in each of
    several sessions spread over the sweep; a repeat's ``session`` names its
    session, so repeats of the same session and round are paired across arms
    (``session`` here lists the sessions' ids). ``"alone"``: this condition was
    timed by itself (another process or machine may have timed the other arm).
    """

    schedule: str
    session: str
    arms: list[str]
    batch_size: int
    num_tokens: int
    warmup_tokens: int
    device: str
    synchronized: bool  # the device was synchronised before each clock read
    repeats: list[TimingRepeat] = field(default_factory=list)


@dataclass
class PassedOver:
    """A head the ranking offered that was not pruned at this level, and why."""

    layer: int
    head: int
    reason: str  # "last head of its layer" | "withholds consent"


@dataclass
class CalibrationUse:
    """Which text a ranking or calibration read, and how much of it."""

    source: str
    sha256: str
    windows: int
    window_tokens: int
    tokens: int


@dataclass
class Ranking:
    """The per-head scores behind the pruning order (least important first), for audit."""

    method: str
    scores: list[list[float]]  # [layers][heads]; the order sorts by score (see ``ascending``)
    ascending: bool
    order: list[list[int]]
    calibration: CalibrationUse | None


@dataclass
class Pruning:
    """The heads this condition pruned, both arms' choices, and how they were chosen."""

    mode: str
    heads: list[list[int]] = field(default_factory=list)
    heads_by_arm: dict[str, list[list[int]] | None] = field(default_factory=dict)
    passed_over: list[PassedOver] = field(default_factory=list)
    ranking: Ranking | None = None
    protected: list[list[int]] = field(default_factory=list)  # kept out of pruning by model.pruning.protect


@dataclass
class ModelShape:
    family: str
    layers: int
    heads: int
    kv_heads: int
    head_dim: int


@dataclass
class MisalignedHead:
    """A head that starts misaligned: ablating it lowered the calibration loss (95% interval below 0)."""

    layer: int
    head: int
    loss_change: float
    ci_low: float
    ci_high: float


@dataclass
class AgencyReport:
    """The agency layer at the end of generation (never after an evaluation pass)."""

    state_counts_end: dict[str, float]
    state_counts_mean: dict[str, float]
    withholding_consent: int
    withholding_runtime_consent: int
    violations: dict[str, int]
    state_map: list[list[str]]
    utilization_map: list[list[float]]
    steps: int
    transitions: dict[str, int] = field(default_factory=dict)  # state entries over the run, by state
    misaligned: list[MisalignedHead] = field(default_factory=list)
    misalignment_tested: int = 0  # heads whose ablation was measured
    thresholds: str = ""  # how overload was triggered ("relative: calibrated level + margin" / "absolute")
    # The manipulation check, over the kept heads' row-forwards of the measured run: the share spent in each
    # non-active state, and the mean gate mass the states removed (1 - factor); 0 means the states never acted.
    acted_share: dict[str, float] = field(default_factory=dict)
    gate_mass_removed: float = 0.0


@dataclass
class Recovery:
    """Where a recovered (fine-tuned) model came from; part of the condition's identity via the config."""

    checkpoint: str
    sha256: str
    settings: dict[str, Any]
    steps: int
    final_val_loss: float | None


@dataclass
class CorpusWindows:
    """Corpus perplexity window by window: each evaluation window's mean negative log-likelihood (nats per
    scored token) and how many tokens it scored.

    Every arm scores the same windows of the same text (one tokenizer, one window and stride), so a window is a
    paired unit of a corpus comparison. ``corpus_perplexity`` is exp(sum(tokens * mean_nll) / sum(tokens)).
    """

    count: int
    mean_nll: list[float]
    tokens: list[int]


@dataclass
class Measurements:
    """What one measuring callback returns: values and failures for its own part of the record."""

    part: str
    sample_metrics: dict[SampleKey, dict[str, float]] = field(default_factory=dict)
    sample_failures: dict[SampleKey, dict[str, str]] = field(default_factory=dict)
    condition_metrics: dict[str, float] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)
    timing: Timing | None = None
    speed_aa: Timing | None = None
    agency: AgencyReport | None = None
    corpus_windows: CorpusWindows | None = None
    unit_values: dict[str, list[float]] = field(default_factory=dict)  # per paired unit, a condition metric

    def add_sample(self, key: SampleKey, name: str, value: float) -> None:
        """Store a finite value; a non-finite one becomes a failure, never a number."""
        value = float(value)
        if math.isfinite(value):
            self.sample_metrics.setdefault(key, {})[name] = value
        else:
            self.fail_sample(key, name, f"non-finite value {value}")

    def fail_sample(self, key: SampleKey, name: str, error: str) -> None:
        self.sample_failures.setdefault(key, {})[name] = error

    def add_condition(self, name: str, value: float) -> None:
        value = float(value)
        if math.isfinite(value):
            self.condition_metrics[name] = value
        else:
            self.fail(name, f"non-finite value {value}")

    def fail(self, name: str, error: str) -> None:
        self.failures.append(Failure(name, error))

    def names(self) -> set[str]:
        """Every metric name this part holds a value or a failure for."""
        found = {n for values in self.sample_metrics.values() for n in values}
        found |= {n for failures in self.sample_failures.values() for n in failures}
        found |= set(self.condition_metrics) | {f.metric for f in self.failures}
        for timing in (self.timing, self.speed_aa):
            if timing is not None:
                found |= {n for r in timing.repeats for n in (*r.metrics, *r.failures)}
        return found


@dataclass
class Summary:
    """Mean, sample standard deviation and counts of one metric at its unit of measurement (for reading).

    ``geometric_mean`` is set for log-scale metrics (perplexity, speed): it is the central value the report
    and the console table show, while one wrecked sample can pull the arithmetic ``mean`` far away.
    """

    mean: float | None
    std: float | None
    n: int
    n_failed: int
    geometric_mean: float | None = None

    @property
    def central(self) -> float | None:
        """The value to show: the geometric mean where the metric lives on the log scale, else the mean."""
        return self.geometric_mean if self.geometric_mean is not None else self.mean


@dataclass
class ConditionRecord:
    """One condition's result record (``schema_version`` 2)."""

    condition_id: str
    status: str
    identity: str  # sha256 of the canonical resolved config
    config: dict[str, Any]  # every setting that can change a result (record.identity)
    run: dict[str, Any]  # how it was run, not part of the identity: output folder, outputs file
    environment: dict[str, Any]
    model: ModelShape | None
    pruning: Pruning | None
    samples: list[Sample] = field(default_factory=list)
    timing: Timing | None = None
    condition_metrics: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    agency: AgencyReport | None = None
    recovery: Recovery | None = None
    corpus_windows: CorpusWindows | None = None  # absent in records written before windows were kept
    # A condition metric's value per paired unit (corpus_kl per evaluation window, the induction metrics per
    # sequence), in unit order: every arm measures the same units, so the report pairs them by position.
    unit_values: dict[str, list[float]] = field(default_factory=dict)
    # A speed A/A: this baseline timed a second time as its own pseudo-arm, in the same sessions and rounds.
    speed_aa: Timing | None = None
    aggregates: dict[str, Summary] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    def sample(self, key: SampleKey) -> Sample | None:
        return next((s for s in self.samples if s.key == key), None)


@dataclass
class Header:
    """What the module knows about its condition: everything of a record that no callback measures."""

    condition_id: str
    identity: str
    config: dict[str, Any]
    run: dict[str, Any]
    environment: dict[str, Any]
    model: ModelShape | None = None
    pruning: Pruning | None = None
    recovery: Recovery | None = None


# -- composing ------------------------------------------------------------------------------------------
def compose(
    header: Header,
    samples: list[Sample],
    parts: list[Measurements],
    status: str = "complete",
    extra_failures: list[Failure] | None = None,
) -> ConditionRecord:
    """One record from the module's header, the generated samples and every callback's part.

    A metric must be produced by exactly one part and be in the catalogue; the
    result does not depend on the order of ``parts``.
    """
    if status not in STATUSES:
        raise ValueError(f"status {status!r} is not one of {STATUSES}")
    owners: dict[str, str] = {}
    for part in parts:
        for name in part.names():
            if name not in METRICS and name not in FAILURE_SCOPES:
                raise ValueError(
                    f"part '{part.part}' recorded '{name}', which is not in the metric catalogue"
                )
            if name in METRICS and name in owners and owners[name] != part.part:
                raise ValueError(f"metric '{name}' is recorded by both '{owners[name]}' and '{part.part}'")
            owners[name] = part.part
    by_key = {
        s.key: dataclasses.replace(s, metrics=dict(s.metrics), failures=dict(s.failures)) for s in samples
    }
    record = ConditionRecord(
        header.condition_id,
        status,
        header.identity,
        header.config,
        header.run,
        header.environment,
        header.model,
        header.pruning,
        recovery=header.recovery,
    )
    failures = list(extra_failures or [])
    for part in sorted(parts, key=lambda p: p.part):
        for key, values in part.sample_metrics.items():
            if key in by_key:
                by_key[key].metrics.update(values)
        for key, errors in part.sample_failures.items():
            if key in by_key:
                by_key[key].failures.update(errors)
        record.condition_metrics.update(part.condition_metrics)
        record.notes.update(part.notes)
        failures += part.failures
        if part.timing is not None:
            record.timing = part.timing
        if part.speed_aa is not None:
            record.speed_aa = part.speed_aa
        if part.agency is not None:
            record.agency = part.agency
        if part.corpus_windows is not None:
            record.corpus_windows = part.corpus_windows
        record.unit_values.update(part.unit_values)
    record.samples = [by_key[k] for k in sorted(by_key)]
    for sample in record.samples:
        sample.metrics = dict(sorted(sample.metrics.items()))
        sample.failures = dict(sorted(sample.failures.items()))
    record.condition_metrics = dict(sorted(record.condition_metrics.items()))
    record.notes = dict(sorted(record.notes.items()))
    record.failures = sorted(failures, key=lambda f: (f.metric, f.error))
    record.aggregates = aggregates(record)
    return record


def _summary(values: list[float], n_failed: int, log_scale: bool) -> Summary:
    n = len(values)
    mean = sum(values) / n if n else None
    std = None
    if mean is not None and n > 1:
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    geometric = (
        math.exp(sum(math.log(v) for v in values) / n)
        if log_scale and n and all(v > 0 and math.isfinite(v) for v in values)
        else None
    )
    return Summary(mean, std, n, n_failed, geometric)


def aggregates(record: ConditionRecord) -> dict[str, Summary]:
    """Per metric measured per sample or per timing repeat: a summary at that unit, for reading only.

    The report never uses these: it averages samples per prompt first (record/catalogue.py).
    """
    result: dict[str, Summary] = {}
    rows: list[tuple[dict[str, float], dict[str, str]]] = [(s.metrics, s.failures) for s in record.samples]
    if record.timing is not None:
        rows += [(r.metrics, r.failures) for r in record.timing.repeats]
    names = sorted({n for metrics, failures in rows for n in (*metrics, *failures)})
    for name in names:
        values = [m[name] for m, _ in rows if name in m]
        log_scale = name in METRICS and METRICS[name].scale == "log"
        result[name] = _summary(values, sum(name in f for _, f in rows), log_scale)
    return result


# -- JSON ------------------------------------------------------------------------------------------------
def to_json(record: ConditionRecord) -> dict[str, Any]:
    """Plain JSON types; sample keys and tuples become lists."""
    return dataclasses.asdict(record)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, where: str) -> Any:
    """``value`` (parsed JSON) as ``tp``, or RecordError naming where it does not fit."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, where)
            except RecordError as error:
                errors.append(str(error))
        raise RecordError(errors[0] if errors else f"{where} is null")
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise RecordError(f"{where} should be an object ({_type_name(tp)})")
        hints = typing.get_type_hints(tp)
        known = {f.name for f in dataclasses.fields(tp)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise RecordError(f"{where} has fields the schema does not know: {unknown}")
        kwargs = {}
        for f in dataclasses.fields(tp):
            if f.name in value:
                kwargs[f.name] = _convert(value[f.name], hints[f.name], f"{where}.{f.name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise RecordError(f"{where} is missing '{f.name}'")
        return tp(**kwargs)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise RecordError(f"{where} should be a list")
        return [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        key_type, item = typing.get_args(tp)
        if not isinstance(value, dict):
            raise RecordError(f"{where} should be an object")
        return {k: _convert(v, item, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RecordError(f"{where} should be a number")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecordError(f"{where} should be an integer")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise RecordError(f"{where} should be {'text' if tp is str else 'true or false'}")
        return value
    raise TypeError(f"the schema uses a type the reader does not handle: {tp}")  # pragma: no cover


def from_json(payload: Any, where: str = "record") -> ConditionRecord:
    """A typed record from parsed JSON, refusing anything the schema does not describe."""
    if not isinstance(payload, dict) or payload.get("schema_version") != SCHEMA_VERSION:
        raise RecordError(f"{where} is not a schema-{SCHEMA_VERSION} result record")
    body = {k: v for k, v in payload.items() if k != "checksum"}
    record = _convert(body, ConditionRecord, where)
    validate(record, where)
    return record


def timing_from_json(payload: Any, where: str = "timing") -> Timing:
    """A typed timing (a session file of a sweep) from parsed JSON, refusing anything the schema does not
    describe or a metric the catalogue does not know."""
    timing = _convert(payload, Timing, where)
    unknown = sorted({n for r in timing.repeats for n in (*r.metrics, *r.failures)} - set(METRICS))
    if unknown:
        raise RecordError(f"{where} holds metrics that are not in the catalogue: {unknown}")
    return timing


def validate(record: ConditionRecord, where: str = "record") -> None:
    """What types alone cannot say: a known status and only catalogued metric names."""
    if record.status not in STATUSES:
        raise RecordError(f"{where} has status {record.status!r}; expected one of {', '.join(STATUSES)}")
    allowed = set(METRICS) | FAILURE_SCOPES
    used = set(record.condition_metrics) | {f.metric for f in record.failures}
    used |= {n for s in record.samples for n in (*s.metrics, *s.failures)}
    used |= set(record.unit_values)
    for timing in (record.timing, record.speed_aa):
        if timing is not None:
            used |= {n for r in timing.repeats for n in (*r.metrics, *r.failures)}
    unknown = sorted(used - allowed)
    if unknown:
        raise RecordError(f"{where} holds metrics that are not in the catalogue: {unknown}")
    for value in (
        *record.condition_metrics.values(),
        *(v for s in record.samples for v in s.metrics.values()),
        *(v for values in record.unit_values.values() for v in values),
    ):
        if not math.isfinite(value):
            raise RecordError(f"{where} holds a non-finite value")
    windows = record.corpus_windows
    if windows is not None and not (
        windows.count == len(windows.mean_nll) == len(windows.tokens)
        and all(math.isfinite(v) for v in windows.mean_nll)
    ):
        raise RecordError(f"{where} has corpus windows whose count, values and token counts do not agree")
