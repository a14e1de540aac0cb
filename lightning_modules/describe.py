"""A condition's config, identity and id, from the resolved config that will run it.

LightningCLI resolves every key (defaults included); ``record.identity`` keeps
all of them but those that cannot change a result, replaces the files they name
by their content, and adds what the objects derive from their settings
(``result_facts``: the bundled texts by content, the prompts read, a recovered
checkpoint's own settings). The CLI describes a condition when a sweep checks it
and when it runs, from the same parsed config, so the two can never disagree
about an id. Objects built without the CLI (library use, tests) are described
from the arguments they were built with, in the same layout.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning_modules.callback_groups import CALLBACK_GROUPS
from record.identity import condition_config, condition_id, file_fingerprint, identity_hash
from record.schema import Header


def describe_condition(resolved: Mapping[str, Any], module: Any, datamodule: Any) -> Header:
    """The header of a condition's record, before any weights load (``environment`` and ``run`` left empty)."""
    facts = {"model": module.result_facts(), "data": datamodule.result_facts() if datamodule else {}}
    config = condition_config(plain(resolved), facts, by_content)
    return Header(condition_id(config), identity_hash(config), config, run={}, environment={})


def resolved_from_objects(
    module: Any, datamodule: Any, callbacks: Sequence[Any], device: str
) -> dict[str, Any]:
    """The resolved config of objects built without LightningCLI: each group's constructor arguments, under the
    group name LightningCLI gives it, and the device as ``trainer.accelerator``."""
    resolved: dict[str, Any] = {"model": module.init_arguments, "trainer": {"accelerator": device}}
    if datamodule is not None:
        resolved["data"] = datamodule.init_arguments
    for name, kind in CALLBACK_GROUPS:
        for callback in callbacks:
            if type(callback) is kind:
                resolved[name] = getattr(callback, "init_arguments", {})
    return plain(resolved)


def by_content(value: Any) -> Any:
    """A setting that names a file stands for its content: the same text on two machines is one condition,
    and a text edited in place is another."""
    if isinstance(value, str) and value and Path(value).is_file():
        return file_fingerprint(value)
    return value


def plain(value: Any) -> Any:
    """Dataclasses and namespaces as nested dicts, so that every setting has a dotted key."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    if hasattr(value, "as_dict") and callable(value.as_dict):  # a jsonargparse Namespace
        return plain(value.as_dict())
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value
