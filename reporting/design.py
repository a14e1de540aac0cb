"""The experiment's design as the records describe it: series, temperatures, levels, arms, and the units.

Records are grouped by the factors a report compares: the model, the pruning
method and any other swept key (a *series*), the temperature, the pruning
level and the *arm* (the baseline, or an agency arm named by its agency
settings). Seeds are replicates and pooled. Everything else in the configs must
be equal: records that differ in a setting that is not compared are never
pooled, and ``DesignError`` names the keys and their values.

The pruning-side protection (``model.pruning.protect``, ``protect_fraction``) names
arms too, not series: a baseline that protects the heads the agency arm protects,
with no agency layer, is the control an agency effect is attributed against
(contract 15), and its dose-response over the protected fraction is a set of such
arms. Records without the key are unprotected.

The units of analysis come from the catalogue: samples are averaged per prompt
(iterations and seeds are repeats within a prompt), on the log scale for
log-scale metrics; timing repeats are read with their session and round, so that
arms timed in the same session pair by round and each session is one unit
(``units.py``); condition metrics are one value per record.
"""

from __future__ import annotations

import difflib
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from record.catalogue import spec
from record.identity import (
    AGENCY_ENABLED_KEY,
    AGENCY_PREFIX,
    AGENCY_SWITCHES,
    LEVEL_KEY,
    METHOD_KEY,
    MODEL_KEY,
    SEED_KEY,
    TEMPERATURE_KEY,
    canonical,
    differing_keys,
    flatten,
)
from record.schema import ConditionRecord, Timing

STANDARD_FACTORS = frozenset({MODEL_KEY, METHOD_KEY, LEVEL_KEY, TEMPERATURE_KEY, SEED_KEY})
# A recovered model's config names its checkpoint by content (one per condition) and the recovery settings:
# records with and without recovery are compared (series recovered=yes/no), never pooled.
RECOVERY_PREFIX = "model.recovery"
RECOVERED = "recovered"
BASELINE = "baseline"
MAIN_AGENCY = "agency"
PROTECT_KEY = "model.pruning.protect"  # none | gradient | random: heads kept out of pruning, no agency layer
PROTECT_FRACTION_KEY = "model.pruning.protect_fraction"
PROTECTION_KEYS = (PROTECT_KEY, PROTECT_FRACTION_KEY)  # they name arms, so records differing in them pool
NO_PROTECTION = "none"
# The agency layer with every run-time part and its pruning policy off: it must write what the baseline writes
# at every level (an A/A check at every pruned level).
INERT_SWITCHES = ("consent_pruning", "state_gating", "overload", "misalignment")


class DesignError(ValueError):
    """Records that cannot be analysed together; the message names what differs and what to do."""


@dataclass(frozen=True, order=True)
class Series:
    """Everything a comparison across levels and temperatures is made within."""

    model: str
    method: str
    split: tuple[tuple[str, str], ...] = ()

    def label(self) -> str:
        model = self.model.rstrip("/").rsplit("/", 1)[-1]
        return " / ".join([model, self.method, *(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in self.split)])

    def recovered(self) -> bool | None:
        """Whether this series holds recovered models (None: the report has no recovered records)."""
        value = dict(self.split).get(RECOVERED)
        return None if value is None else value == "yes"

    def before_recovery(self) -> Series:
        return Series(
            self.model, self.method, tuple((k, "no" if k == RECOVERED else v) for k, v in self.split)
        )


@dataclass(frozen=True)
class Arm:
    """The baseline, or one agency arm named by the agency settings it does not share with the others; either
    with `` + <kind> protection (<fraction>%)`` when the pruning protected heads without the agency layer.

    Built once, with the design, from its records' settings (:func:`arm_labels`): what an arm is (agency,
    protection, sham, inert) is read from its fields, never parsed back from ``label``, which is for display.
    Arms are equal when their labels are (one label, one arm). They sort as: the baseline, the protected
    baselines, the main agency arm, then the variants by their settings (numbers by value, so a dose-response
    over the protected fraction reads 0, 5, 15, 30%).
    """

    label: str
    agency: bool = field(default=False, compare=False)
    main: bool = field(default=False, compare=False)  # the baseline or the default agency arm, unprotected
    protection: tuple[str, float] = field(default=("none", 0.0), compare=False)
    sham: bool = field(default=False, compare=False)
    inert: bool = field(default=False, compare=False)  # agency with every run-time part and its pruning off
    real: str | None = field(default=None, compare=False)  # a sham's real arm: its label without the sham
    settings: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)  # agency flat keys
    order: tuple[Any, ...] = field(default=(), compare=False, repr=False)

    def __lt__(self, other: Arm) -> bool:
        return (self.agency, not self.main, self.order) < (other.agency, not other.main, other.order)

    @property
    def protected(self) -> bool:
        """A baseline whose pruning kept a protected set of heads (no agency layer): an attribution control."""
        return not self.agency and self.with_protection

    @property
    def with_protection(self) -> bool:
        """Any arm whose pruning kept a protected set out (a grid over protection and agency makes agency
        arms with it too: their pruning differs from the agency arm's, so they are no ablation of it)."""
        return self.protection[0] != NO_PROTECTION


@dataclass(frozen=True, order=True)
class Cell:  # sorts by series, temperature, level, arm
    series: Series
    temperature: float
    level: float
    arm: Arm


@dataclass(frozen=True)
class TimedValue:
    """One timing repeat: the session it was measured in and its place (round) there."""

    session: str
    repeat: int
    value: float


def timed_values(timing: Timing, metric: str) -> list[TimedValue]:
    """A timing's repeats that hold ``metric``, each under its session (records of one session name it once)."""
    return [
        TimedValue(repeat.session or timing.session, repeat.repeat, repeat.metrics[metric])
        for repeat in timing.repeats
        if metric in repeat.metrics
    ]


def _ranges(numbers: list[int]) -> str:
    """``0-8,11``: sorted numbers with runs written as ranges."""
    runs: list[list[int]] = []
    for n in sorted(set(numbers)):
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


def _overrides_text(overrides: list[dict[str, Any]]) -> str:
    """``head_overrides`` in a line (``withdrawn L0 h0-8, L1 h0-8``): per state and consent, each layer's heads;
    as distinct as the list itself, so arms that force different heads keep different labels."""
    groups: dict[tuple[str, bool], dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for o in overrides:
        key = (str(o.get("state") or "unforced"), bool(o.get("consent", True)))
        groups[key][int(o.get("layer", -1))].append(int(o.get("head", -1)))
    parts = []
    for (state, consent), layers in sorted(groups.items()):
        heads = ", ".join(f"L{layer} h{_ranges(h)}" for layer, h in sorted(layers.items()))
        parts.append(f"{state}{'' if consent else ' without consent'} {heads}")
    return "; ".join(parts)


def _text(value: Any) -> str:
    if isinstance(value, list) and value and all(isinstance(v, dict) and "layer" in v for v in value):
        return _overrides_text(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


DEPARTURES_KEY = "model.agency.departures"  # the harness lists where an agency arm departs from the defaults


ABLATION_KEY = AGENCY_PREFIX + "ablation"


def resolved_flat(config: dict[str, Any]) -> dict[str, Any]:
    """A record's flat config with ``model.agency.ablation`` resolved into the switch it names, as the agency
    layer resolves it. A record keeps the ablation as it was written (``state_gating: true`` beside
    ``ablation: state_gating``), so arms are named, found inert and told from the sham by the switches they ran
    with, and two spellings of one arm are one arm."""
    flat = flatten(config)
    ablation = flat.get(ABLATION_KEY)
    if ablation in AGENCY_SWITCHES:
        flat[AGENCY_PREFIX + ablation] = ablation == "sham"
        flat[ABLATION_KEY] = "none"
    return flat


def _agency_flats(records: list[ConditionRecord]) -> dict[str, dict[str, Any]]:
    return {
        r.condition_id: {
            k: canonical(v) for k, v in resolved_flat(r.config).items() if k.startswith(AGENCY_PREFIX)
        }
        for r in records
    }


Part = tuple[str, Any]  # a setting in which an agency arm departs from the others: (name, value)


def _part_text(part: Part) -> str:
    return f"{part[0]}={_text(part[1])}"


def _departure_parts(flat: dict[str, Any]) -> list[Part]:
    return [(name, flat.get(AGENCY_PREFIX + name)) for name in flat.get(DEPARTURES_KEY) or []]


def shared_agency_settings(records: list[ConditionRecord]) -> list[str]:
    """Tuning departures from the defaults (``key=value``) that every agency record shares.

    They do not tell the arms apart, so labels leave them out and the summary states
    them once; switching a component off or the sham control is never shared away:
    such an arm is a variant, not the agency layer.
    """
    flats = [flat for flat in _agency_flats(records).values() if flat.get(AGENCY_ENABLED_KEY)]
    if not flats or not all(DEPARTURES_KEY in flat for flat in flats):
        return []
    common = set.intersection(*({_part_text(p) for p in _departure_parts(flat)} for flat in flats))
    return sorted(part for part in common if part.split("=", 1)[0] not in AGENCY_SWITCHES)


PROTECTION_JOIN = " + "


def protection_of(flat: dict[str, Any]) -> tuple[str, float]:
    """(kind, fraction) of a record's pruning-side protection; records written before it existed: none. A
    protected fraction of 0 protects no head, so it is no protection (the protection_dose sweep's 0% arm is the
    baseline the other fractions are compared with)."""
    kind = str(flat.get(PROTECT_KEY) or NO_PROTECTION)
    fraction = flat.get(PROTECT_FRACTION_KEY)
    if kind == NO_PROTECTION or fraction is None or float(fraction) == 0:
        return NO_PROTECTION, 0.0
    return kind, float(fraction)


def protection_label(kind: str, fraction: float) -> str:
    return "" if kind == NO_PROTECTION else f"{PROTECTION_JOIN}{kind} protection ({100 * fraction:g}%)"


def is_inert(flat: dict[str, Any]) -> bool:
    """An agency record whose run-time parts and pruning policy are all off (and no sham): an A/A arm."""
    return (
        bool(flat.get(AGENCY_ENABLED_KEY))
        and not flat.get(AGENCY_PREFIX + "sham")
        and all(flat.get(AGENCY_PREFIX + name) is False for name in INERT_SWITCHES)
    )


def forces_states(flat: dict[str, Any]) -> bool:
    """An agency record whose ``head_overrides`` put a head in a state other than active: the states act by
    construction (a positive control), so with nothing pruned it is no A/A."""
    overrides = flat.get(AGENCY_PREFIX + "head_overrides") or []
    return any(isinstance(o, dict) and o.get("state") not in (None, "active") for o in overrides)


def _value_order(value: Any) -> tuple[int, Any]:
    """Numbers by value, before text (as a person reads a list of settings)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, float(value))
    return (1, _text(value))


def _agency_label(parts: list[Part]) -> str:
    return f"{MAIN_AGENCY}({', '.join(_part_text(p) for p in parts)})" if parts else MAIN_AGENCY


def _arm(flat: dict[str, Any], parts: list[Part] | None) -> Arm:
    """The arm of one record: the baseline (``parts`` None) or the agency arm departing in ``parts``."""
    protection = protection_of(flat)
    suffix = protection_label(*protection)
    protection_order = (0,) if not suffix else (1, *protection)
    if parts is None:
        return Arm(BASELINE + suffix, main=not suffix, protection=protection, order=((), protection_order))
    sham = any(name == "sham" and _text(value) == "true" for name, value in parts)
    real = [part for part in parts if part[0] != "sham"]
    return Arm(
        _agency_label(parts) + suffix,
        agency=True,
        main=not parts and not suffix,
        protection=protection,
        sham=sham,
        inert=is_inert(flat),
        real=_agency_label(real) + suffix if sham else None,
        settings={k: v for k, v in flat.items() if k.startswith(AGENCY_PREFIX)},
        order=(tuple((name, _value_order(value)) for name, value in parts), protection_order),
    )


def arm_labels(records: list[ConditionRecord]) -> dict[str, Arm]:
    """Each record's arm (named by :func:`agency_departures`, with its pruning-side protection appended), one
    object per label: the arms of a design are built here, once."""
    departures = agency_departures(records)
    arms = {r.condition_id: _arm(resolved_flat(r.config), departures[r.condition_id]) for r in records}
    one_per_label = {arm.label: arm for arm in arms.values()}
    return {cid: one_per_label[arm.label] for cid, arm in arms.items()}


def agency_departures(records: list[ConditionRecord]) -> dict[str, list[Part] | None]:
    """Per record, None for the baseline, else the settings in which its agency arm departs from the default
    (leaving out :func:`shared_agency_settings`): an empty list is the default agency layer. Records that do not
    say what the defaults are are read against the settings most agency records share (every key without a
    majority is listed)."""
    flats = _agency_flats(records)
    agency_ids = [cid for cid, flat in flats.items() if flat.get(AGENCY_ENABLED_KEY)]
    parts: dict[str, list[Part] | None] = {cid: None for cid in flats if cid not in agency_ids}
    if agency_ids and all(DEPARTURES_KEY in flats[cid] for cid in agency_ids):
        shared = set(shared_agency_settings(records))
        for cid in agency_ids:
            parts[cid] = [p for p in _departure_parts(flats[cid]) if _part_text(p) not in shared]
        return parts
    majority: dict[str, Any] = {}
    keys = sorted({k for cid in agency_ids for k in flats[cid]} - {DEPARTURES_KEY})
    for key in keys:
        counts = Counter(repr(flats[cid].get(key)) for cid in agency_ids).most_common()
        if len(counts) == 1 or counts[0][1] > counts[1][1]:
            majority[key] = counts[0][0]
    for cid in agency_ids:
        flat = flats[cid]
        parts[cid] = [
            (k[len(AGENCY_PREFIX) :], flat.get(k))
            for k in keys
            if k not in majority or repr(flat.get(k)) != majority[k]
        ]
    return {cid: parts[cid] for cid in flats}


def parse_where(clauses: Iterable[str]) -> list[tuple[str, Any]]:
    """``KEY=VALUE`` filters; the value is read as YAML (30, true, entropy_low)."""
    parsed = []
    for clause in clauses:
        if "=" not in clause:
            raise DesignError(
                f"--where {clause!r} is invalid; allowed: KEY=VALUE, e.g. model.pruning.mode=remove"
            )
        key, value = clause.split("=", 1)
        parsed.append((key.strip(), yaml.safe_load(value)))
    return parsed


def check_keys(records: list[ConditionRecord], split_by: Iterable[str], where_keys: Iterable[str]) -> None:
    """A ``--split-by`` or ``--where`` key that no record has is a typo, not a filter or a factor: refuse it
    (a misspelt split key would otherwise pool silently, a misspelt filter would drop every record)."""
    present = set().union(*(flatten(r.config) for r in records))
    for option, keys in (("--split-by", split_by), ("--where", where_keys)):
        for key in keys:
            if key not in present:
                close = difflib.get_close_matches(key, present, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise DesignError(
                    f"{option} key '{key}' is not a config key of these records{hint}; "
                    f"allowed: {', '.join(sorted(present))}"
                )


class Design:
    """The records of one report, indexed by cell, with the per-unit values the statistics use."""

    def __init__(self, records: list[ConditionRecord], split_keys: Iterable[str] = ()) -> None:
        self.split_keys = tuple(sorted(set(split_keys) - STANDARD_FACTORS))
        self.records = records
        self.flat = {r.condition_id: resolved_flat(r.config) for r in records}
        self.has_recovery = any(r.recovery is not None for r in records)
        self.arm_of = arm_labels(records)
        self.cells: dict[Cell, list[ConditionRecord]] = defaultdict(list)
        for record in records:
            self.cells[self.cell_of(record)].append(record)
        self.cells = dict(sorted(self.cells.items()))

    def cell_of(self, record: ConditionRecord) -> Cell:
        """The cell a record belongs to: its series (model, method, compared keys), temperature, level and arm."""
        flat = self.flat[record.condition_id]
        split = tuple((k, _text(flat.get(k))) for k in self.split_keys)
        if self.has_recovery:
            split += ((RECOVERED, "yes" if record.recovery is not None else "no"),)
        series = Series(str(flat.get(MODEL_KEY)), str(flat.get(METHOD_KEY)), split)
        return Cell(
            series,
            float(flat[TEMPERATURE_KEY]),
            float(flat[LEVEL_KEY]),
            self.arm_of[record.condition_id],
        )

    # -- the factors ---------------------------------------------------------------------------------
    def series(self) -> list[Series]:
        return sorted({c.series for c in self.cells})

    def temperatures(self, series: Series | None = None) -> list[float]:
        return sorted({c.temperature for c in self.cells if series is None or c.series == series})

    def levels(self, series: Series | None = None) -> list[float]:
        return sorted({c.level for c in self.cells if series is None or c.series == series})

    def arms(self, series: Series | None = None) -> list[Arm]:
        return sorted({c.arm for c in self.cells if series is None or c.series == series})

    def forces_states(self, series: Series, arm: Arm) -> bool:
        """Whether any record of ``arm`` in ``series`` forces head states (:func:`forces_states`)."""
        return any(
            forces_states(resolved_flat(r.config))
            for cell, members in self.cells.items()
            if cell.series == series and cell.arm == arm
            for r in members
        )

    def agency_arms(self, series: Series | None = None) -> list[Arm]:
        arms = [a for a in self.arms(series) if a.agency]
        return [a for a in arms if a.main] or arms

    def primary_arms(self, series: Series) -> list[Arm]:
        """The agency arms that answer the questions: an arm that forces head states is a positive control
        (its states act by construction), so its effect says nothing about what the agency layer does."""
        return [a for a in self.agency_arms(series) if not self.forces_states(series, a)]

    def positive_control_arms(self) -> list[str]:
        """``series / arm`` of every agency arm left out of the questions because it forces head states."""
        return [
            f"{series.label()} / {arm.label}"
            for series in self.series()
            for arm in self.agency_arms(series)
            if self.forces_states(series, arm)
        ]

    def protected_baselines(self, series: Series | None = None) -> list[Arm]:
        return [a for a in self.arms(series) if a.protected]

    def inert_arms(self, series: Series | None = None) -> list[Arm]:
        return [a for a in self.arms(series) if a.agency and a.inert]

    def matched_control(self, series: Series, arm: Arm) -> Arm | None:
        """The protected baseline that makes ``arm``'s pruning choice without its layer: gradient protection of
        the fraction the agency arm protects (``protect_top_fraction``); None when the records hold none."""
        fraction = arm.settings.get(AGENCY_PREFIX + "protect_top_fraction")
        if fraction is None:
            return None
        for candidate in self.protected_baselines(series):
            kind, protected = candidate.protection
            if kind == "gradient" and math.isclose(protected, float(fraction), abs_tol=1e-9):
                return candidate
        return None

    def seeds(self, cell: Cell) -> list[Any]:
        return sorted({self.flat[r.condition_id].get(SEED_KEY) for r in self.cells.get(cell, [])}, key=str)

    # -- units -------------------------------------------------------------------------------------------
    def prompt_values(self, cell: Cell, metric: str) -> dict[int, float]:
        """Per prompt: the mean over its samples (iterations, seeds) on the metric's analysis scale."""
        log = spec(metric).scale == "log"
        values: dict[int, list[float]] = defaultdict(list)
        for record in self.cells.get(cell, []):
            for sample in record.samples:
                value = sample.metrics.get(metric)
                if value is None or (log and value <= 0):
                    continue
                values[sample.prompt_index].append(math.log(value) if log else value)
        return {p: sum(v) / len(v) for p, v in sorted(values.items())}

    def sample_values(self, cell: Cell, metric: str) -> dict[int, list[tuple[float, float | None]]]:
        """Per prompt: (value, reference perplexity of the same sample) of every sample that has the metric."""
        values: dict[int, list[tuple[float, float | None]]] = defaultdict(list)
        for record in self.cells.get(cell, []):
            for sample in record.samples:
                if metric in sample.metrics:
                    values[sample.prompt_index].append(
                        (sample.metrics[metric], sample.metrics.get("reference_perplexity"))
                    )
        return dict(sorted(values.items()))

    def timings(self, cell: Cell, metric: str) -> list[TimedValue]:
        return [
            value
            for record in self.cells.get(cell, [])
            if record.timing is not None
            for value in timed_values(record.timing, metric)
        ]

    def condition_values(self, cell: Cell, metric: str) -> list[float]:
        return [
            r.condition_metrics[metric] for r in self.cells.get(cell, []) if metric in r.condition_metrics
        ]

    def failures(self, cell: Cell, metric: str) -> int:
        count = 0
        for record in self.cells.get(cell, []):
            count += sum(metric in s.failures for s in record.samples)
            count += sum(f.metric == metric for f in record.failures)
            if record.timing is not None:
                count += sum(metric in r.failures for r in record.timing.repeats)
        return count

    def timed_alone(self) -> bool:
        """Whether any agency arm's speed was not measured side by side with its baseline."""
        return any(r.timing is not None and r.timing.schedule == "alone" for r in self.records)


def build_design(
    records: list[ConditionRecord],
    swept: Iterable[str] = (),
    split_by: Iterable[str] = (),
    where: Iterable[tuple[str, Any]] = (),
) -> Design:
    """Filter, then refuse to pool records that differ in anything but the compared factors."""
    where = list(where)
    check_keys(records, split_by, [key for key, _ in where])
    for key, value in where:
        records = [r for r in records if canonical(flatten(r.config).get(key)) == canonical(value)]
    compared = STANDARD_FACTORS | set(swept) | set(split_by)
    configs = [
        {
            k: v
            for k, v in flatten(r.config).items()
            if k not in compared
            and k not in PROTECTION_KEYS
            and not k.startswith((AGENCY_PREFIX, RECOVERY_PREFIX))
        }
        for r in records
    ]
    recovered = [
        {k: v for k, v in flatten(r.config).items() if k.startswith(RECOVERY_PREFIX + ".settings")}
        for r in records
        if r.recovery is not None
    ]
    different = {**differing_keys(configs), **differing_keys(recovered)}
    if different:
        shown = "; ".join(
            f"{k}: {', '.join(_text(v) for v in values[:4])}" for k, values in list(different.items())[:6]
        )
        raise DesignError(
            f"records differ in settings that are not compared ({shown}); they are not pooled. "
            "Report the folders separately, keep one setting with --where KEY=VALUE, or compare "
            "them with --split-by KEY"
        )
    present = set().union(*(flatten(r.config) for r in records)) if records else set()
    split = {
        k
        for k in (set(swept) | set(split_by)) & present
        if k not in PROTECTION_KEYS and not k.startswith((AGENCY_PREFIX, RECOVERY_PREFIX))
    }
    return Design(records, split)
