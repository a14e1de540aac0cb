"""A condition's resolved config, identity and id, collected from the objects that will run it.

The module, the data module and every measuring callback state the settings
that can change a result (``result_settings``); ``describe_condition`` puts them
together with ``record.identity``. The CLI calls it when a condition runs and the
sweep runner when it checks a condition before running anything, on the same
kind of objects, so the two can never disagree about an id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from callbacks.base import measurement_settings
from record.identity import condition_id, identity_hash, resolved_config
from record.schema import Header


def describe_condition(module: Any, datamodule: Any, callbacks: Sequence[Any], device: str) -> Header:
    """The header of a condition's record, before any weights load (``environment`` and ``run`` left empty)."""
    config = resolved_config(
        module.result_settings(),
        datamodule.result_settings() if datamodule else {},
        measurement_settings(list(callbacks)),
        device,
    )
    return Header(condition_id(config), identity_hash(config), config, run={}, environment={})
