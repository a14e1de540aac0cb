"""The settings reference (``docs/settings.md``), generated from the parser so it cannot drift from the code.

Every key of ``predict`` that the harness defines (the model, data, timing and measuring groups, the record and
the device) with the value ``configs/default.yaml`` gives it and the help the parser shows, which comes from
the settings' own docstrings. Lightning's Trainer keys are left to Lightning's documentation.

    python -m lightning_modules.settings_reference > docs/settings.md

A test compares the file with a fresh rendering and fails when it is stale.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from lightning_modules.inputs.arguments import bundled_configs_dir

OURS = ("model.", "data.", "timing.", "memory.", "quality.", "diversity.", "outputs.", "record.")
DEVICE_KEY = "trainer.accelerator"
DEFAULT_CONFIG = bundled_configs_dir() / "default.yaml"
DEVICE_HELP = "auto (cuda when available, else cpu), cpu or cuda (refused on a machine without CUDA)."
HEADER = """# Settings

Generated from the parser by `python -m lightning_modules.settings_reference > docs/settings.md`;
`tests/lightning_modules/test_settings_reference.py` fails when this file is stale. Every key is a flag
(`--model.pruning.level=50`) and a sweep parameter; the default is what `configs/default.yaml` sets, and
`pruning-agency predict --config configs/default.yaml --print_config` prints the resolved values. Every setting
that can change a result is part of a condition's identity (its id and record); those that cannot (an agency
key of a baseline arm, output paths, `quiet`) are not.

| key | default | what it does |
|---|---|---|
"""


def _cell(text: str) -> str:
    """One table cell: the help on one line, reST literals as Markdown code, pipes escaped."""
    one_line = " ".join(text.split())
    one_line = re.sub(r"``([^`]+)``", r"`\1`", one_line)
    return one_line.replace("|", "\\|")


def _shown(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return f"{value:g}"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def settings_rows() -> list[tuple[str, str, str]]:
    """(key, default, help) for every key of ours, in the parser's order."""
    from lightning_modules.lightning_cli import check_args
    from record.identity import flatten

    cli = check_args(["--config", str(DEFAULT_CONFIG)])
    subcommands: Any = cli.parser._subcommands_action
    parser = subcommands._name_parser_map["predict"]
    # The values as the file gives them, before the run resolves any (the device, the run folder); the parser's
    # own default for a key the file leaves out.
    given = flatten(yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8")))
    values = {**flatten(cli.config["predict"].as_dict()), **given}
    rows = []
    for action in parser._actions:
        key = action.dest
        if not (key.startswith(OURS) or key == DEVICE_KEY) or key not in values:
            continue
        help_text = DEVICE_HELP if key == DEVICE_KEY else action.help or ""
        rows.append((key, _shown(values[key]), _cell(help_text)))
    return rows


def settings_markdown() -> str:
    lines = [f"| `{key}` | `{default}` | {help_text} |" for key, default, help_text in settings_rows()]
    return HEADER + "\n".join(lines) + "\n"


if __name__ == "__main__":
    import os

    os.environ.setdefault("WANDB_MODE", "offline")
    print(settings_markdown(), end="")
