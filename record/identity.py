"""A condition's identity: every resolved setting that can change a result, and nothing else.

The resolved config is a nested mapping with four parts::

    model:        model name, precision, seed, checkpoint, pruning, agency, generation,
                  calibration and evaluation settings (texts by content hash)
    data:         prompts by content hash, how many, iterations, batch size
    measurement:  settings of the measuring callbacks (timing repeats, n-gram length, ...)
    device:       where it ran (cpu, cuda)

Settings that cannot change a result (output folder, quiet mode, W&B project,
saving texts) are never collected. When the agency layer is off, its settings
cannot change anything, so the agency part shrinks to ``{"enabled": false}``:
a sweep over an agency key then has one baseline, not one per value.

The id is a readable prefix plus a hash of the canonical form, in which every
number is a float (a level of 30 and of 30.0 are one condition). The same
function names a condition when a sweep checks it, when it runs, and when the
report pairs records, so resume and pairing can never disagree.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# Keys of the flat (dotted) config that the comparisons of a report are about;
# the agency part as a whole is the arm.
MODEL_KEY = "model.model_name"
METHOD_KEY = "model.pruning.method"
LEVEL_KEY = "model.pruning.level"
TEMPERATURE_KEY = "model.generation.temperature"
SEED_KEY = "model.seed"
AGENCY_PREFIX = "model.agency."
AGENCY_ENABLED_KEY = "model.agency.enabled"
# The agency layer's parts that can be switched off one at a time, and its placebo control: a departure in one
# of these makes a different arm (a variant); a departure in any other agency setting only tunes the layer.
AGENCY_COMPONENTS = ("consent_pruning", "state_gating", "overload", "misalignment")
AGENCY_SWITCHES = (*AGENCY_COMPONENTS, "sham")


def canonical(value: Any) -> Any:
    """The form identity is computed on: numbers as floats, mappings with sorted string keys."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): canonical(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    return str(value)


def resolved_config(
    model: Mapping[str, Any], data: Mapping[str, Any], measurement: Mapping[str, Any], device: str
) -> dict[str, Any]:
    """The config that identifies a condition, from each component's result-changing settings."""
    model = dict(model)
    agency = dict(model.get("agency") or {})
    model["agency"] = agency if agency.get("enabled") else {"enabled": False}
    return {"model": model, "data": dict(data), "measurement": dict(measurement), "device": str(device)}


def identity_hash(config: Mapping[str, Any]) -> str:
    text = json.dumps(canonical(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"pruning": {"level": 30}}}`` -> ``{"model.pruning.level": 30}`` (lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


def condition_id(config: Mapping[str, Any]) -> str:
    """Readable and stable: ``<model>_<method>_L<level>_<arm>_T<temperature>_s<seed>_<hash>``.

    Every setting is in the hash; the readable part only helps a person find a file.
    """
    flat = flatten(config)
    model = Path(str(flat.get(MODEL_KEY, "model")).rstrip("/")).name or "model"
    arm = "agency" if flat.get(AGENCY_ENABLED_KEY) else "baseline"
    if flat.get("model.agency.sham"):
        arm = "sham"
    temperature = (
        f"_T{_short(flat[TEMPERATURE_KEY])}" if TEMPERATURE_KEY in flat else ""
    )  # a recovered model has none
    return (
        f"{model}_{flat.get(METHOD_KEY)}_L{_short(flat.get(LEVEL_KEY))}_{arm}"
        f"{temperature}_s{_short(flat.get(SEED_KEY))}_{identity_hash(config)[:10]}"
    )


def file_fingerprint(path: str | Path, label: str | None = None) -> dict[str, str]:
    """A text a result depends on, named by its content: ``{"file": name, "sha256": hex}``."""
    content = Path(path).read_bytes()
    return {"file": label or Path(path).name, "sha256": hashlib.sha256(content).hexdigest()}


def differing_keys(configs: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Flat keys whose canonical values are not all equal across ``configs``, with the distinct values."""
    flats = [{k: canonical(v) for k, v in flatten(c).items()} for c in configs]
    keys = sorted({k for f in flats for k in f})
    result = {}
    for key in keys:
        values = []
        for flat in flats:
            value = flat.get(key, "(absent)")
            if value not in values:
                values.append(value)
        if len(values) > 1:
            result[key] = values
    return result
