"""A condition's identity: the whole resolved config, minus the settings that cannot change a result.

The config a condition runs with is LightningCLI's resolved config (every key of
``model``, ``data``, ``trainer`` and each measuring callback's group, defaults
included). Its identity is that config with three changes, and nothing else:

- the keys in ``NOT_RESULT_SETTINGS`` (one documented list: output folder, W&B
  logger, progress bars, fit-only trainer keys, ...) are left out;
- a file a setting names is replaced by its content hash, so the same text on
  two machines is one condition and an edited text at the same path is another;
- facts the objects derive from their settings are added (the bundled texts by
  content, the number of prompts read, a recovered checkpoint's own settings).

A new setting therefore changes the identity unless someone decides otherwise
in ``NOT_RESULT_SETTINGS``. When the agency layer is off its settings cannot
change anything, so the agency part shrinks to ``{"enabled": false}``: a sweep
over an agency key then has one baseline, not one per value.

The id is a readable prefix plus a hash of the canonical form, in which every
number is a float (a level of 30 and of 30.0 are one condition). The same
function names a condition when a sweep checks it, when it runs, and when the
report pairs records, so resume and pairing can never disagree.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

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
AgencyComponent = Literal["consent_pruning", "state_gating", "overload", "misalignment"]
AGENCY_COMPONENTS: tuple[str, ...] = get_args(AgencyComponent)
AGENCY_SWITCHES = (*AGENCY_COMPONENTS, "sham")


_FIT_ONLY = "read by fit only: predict never uses it (a recovered model is named by its checkpoint)"
_DISPLAY = "what the terminal shows"
# Every key of the resolved config that cannot change a result, with why. A key covers everything below it.
NOT_RESULT_SETTINGS: dict[str, str] = {
    "config": "the paths of the config files read; their content is already in the other keys",
    "seed_everything": "sampling, the random ranking and the sham draw their own seeds from model.seed",
    "record": "where and how the record is written (folder, quiet mode, what a W&B failure does)",
    "outputs": "whether the generated texts are also written to a text file",
    "return_predictions": "whether Lightning keeps predict_step's outputs in memory",
    "trainer.logger": "where the numbers are sent (W&B project, folder, run name, tags)",
    "trainer.enable_progress_bar": _DISPLAY,
    "trainer.enable_model_summary": _DISPLAY,
    "trainer.default_root_dir": "where Lightning writes its own files",
    "trainer.enable_autolog_hparams": "whether hyper-parameters are sent to the loggers",
    "trainer.model_registry": "where a trained model is registered",
    "trainer.log_every_n_steps": _FIT_ONLY,
    "trainer.enable_checkpointing": _FIT_ONLY,
    "trainer.max_epochs": _FIT_ONLY,
    "trainer.min_epochs": _FIT_ONLY,
    "trainer.max_steps": _FIT_ONLY,
    "trainer.min_steps": _FIT_ONLY,
    "trainer.max_time": _FIT_ONLY,
    "trainer.limit_train_batches": _FIT_ONLY,
    "trainer.limit_val_batches": _FIT_ONLY,
    "trainer.limit_test_batches": "read by test only",
    "trainer.val_check_interval": _FIT_ONLY,
    "trainer.check_val_every_n_epoch": _FIT_ONLY,
    "trainer.num_sanity_val_steps": _FIT_ONLY,
    "trainer.accumulate_grad_batches": _FIT_ONLY,
    "trainer.gradient_clip_val": _FIT_ONLY,
    "trainer.gradient_clip_algorithm": _FIT_ONLY,
    "trainer.reload_dataloaders_every_n_epochs": _FIT_ONLY,
    "trainer.sync_batchnorm": _FIT_ONLY,
    "trainer.detect_anomaly": _FIT_ONLY,
    "optimizer": _FIT_ONLY,
    "lr_scheduler": _FIT_ONLY,
    "weights_only": "how a Lightning checkpoint given as ckpt_path is unpickled, not what it holds",
    "model.recovery": "how fit recovers a model; predict takes the settings a checkpoint was trained with from "
    "the checkpoint itself (added back as model.recovery)",
}


def is_result_setting(key: str) -> bool:
    """False for a key that ``NOT_RESULT_SETTINGS`` names, or one below such a key."""
    return not any(key == name or key.startswith(name + ".") for name in NOT_RESULT_SETTINGS)


def condition_config(
    resolved: Mapping[str, Any],
    facts: Mapping[str, Any] | None = None,
    by_content: Callable[[Any], Any] = lambda value: value,
) -> dict[str, Any]:
    """The config that identifies a condition: ``resolved`` without what cannot change a result, each value
    passed through ``by_content`` (a file path becomes its content hash), then ``facts`` merged in."""
    kept = {key: by_content(value) for key, value in flatten(resolved).items() if is_result_setting(key)}
    config = _merge(unflatten(kept), facts or {})
    model = config.get("model")
    if isinstance(model, dict) and not (model.get("agency") or {}).get("enabled"):
        model["agency"] = {"enabled": False}
    if isinstance(model, dict) and not seed_acts(model):
        model["seed"] = None
    return config


def seed_acts(model: Mapping[str, Any]) -> bool:
    """Whether ``model.seed`` can change an evaluation-only condition's result: only through a random ranking,
    a random protection or the sham control's permutation (an evaluation-only condition samples nothing, and
    the induction probe's sequences are fixed). So a sweep crossing seeds with deterministic rankings runs each ranking once."""
    evaluation, pruning = model.get("evaluation") or {}, model.get("pruning") or {}
    if not evaluation.get("only"):
        return True
    agency = model.get("agency") or {}
    return (
        pruning.get("method") == "random"
        or pruning.get("protect") == "random"
        or bool(agency.get("enabled") and agency.get("sham"))
    )


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"model.pruning.level": 30}`` -> ``{"model": {"pruning": {"level": 30}}}``."""
    tree: dict[str, Any] = {}
    for dotted, value in flat.items():
        *parents, leaf = dotted.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = dict(value) if isinstance(value, Mapping) else value
    return base


def init_arguments(cls: type[object], frame_locals: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments ``cls.__init__`` was called with, read from its frame's locals (``locals()`` as the first
    statement): the resolved config of an object built without LightningCLI, with every parameter in it."""
    parameters = inspect.signature(cls.__init__).parameters
    return {
        name: frame_locals[name]
        for name, parameter in parameters.items()
        if name != "self" and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    }


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
    """The config that identifies a recovered model (``fit``): its model settings, in the layout of a
    condition's config, and the device."""
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
