"""Sweep files: W&B's format, read and expanded the way ``wandb agent`` does; bad files are one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from run_helpers import REPO, tiny_base_config, tiny_sweep

import cli
from lightning_modules.runs.sweep_file import as_flags, expand, find_sweep, load_sweep
from record.errors import ConfigError
from record.storage import read_record


@pytest.fixture
def no_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_modules import store

    def forbidden(*args, **kwargs):
        raise AssertionError("a model was loaded for a sweep that should have been refused")

    monkeypatch.setattr(store.ModelStore, "base", forbidden)


@pytest.mark.parametrize(
    ("name", "count", "levels", "methods"),
    [
        ("quickstart", 16, [0, 30, 50, 70], {"entropy"}),
        ("gpt2", 128, [0, 10, 20, 30, 40, 50, 60, 70], {"entropy", "random", "magnitude", "gradient"}),
        ("distilgpt2", 128, [0, 10, 20, 30, 40, 50, 60, 70], {"entropy", "random", "magnitude", "gradient"}),
    ],
)
def test_shipped_sweeps_expand_to_the_documented_grid(name, count, levels, methods) -> None:
    spec = load_sweep(REPO / "configs" / "sweeps" / f"{name}.yaml")
    conditions = expand(spec)
    assert spec.method == "grid"
    configs = [Path(a) for a in spec.base_args if a.endswith(".yaml")]
    assert configs and all(path.is_file() for path in configs)  # found relative to the sweep file or bundled
    assert len(conditions) == count and len({json.dumps(c, sort_keys=True) for c in conditions}) == count
    assert sorted({c["model.pruning.level"] for c in conditions}) == levels
    assert {c["model.agency.enabled"] for c in conditions} == {False, True}
    assert {c["model.generation.temperature"] for c in conditions} == {0.7, 1.0}
    assert {c["model.pruning.method"] for c in conditions} == methods


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "sweeps").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_bundled_sweep_optimises_the_primary_quality_endpoint(path: Path) -> None:
    """``wandb sweep`` shows and optimises ``metric``: the summary key of reference perplexity's central value."""
    from record.catalogue import METRICS

    metric = yaml.safe_load(path.read_text(encoding="utf-8"))["metric"]
    assert metric == {"name": "reference_perplexity", "goal": "minimize"}
    assert METRICS[metric["name"]].direction == "lower" and METRICS[metric["name"]].measured_per == "sample"
    load_sweep(path)  # the local runner accepts it


@pytest.mark.slow  # every check on every bundled sweep's conditions
@pytest.mark.parametrize(
    ("name", "conditions"),
    [
        ("quickstart", 16),
        ("smoke", 4),
        ("agency_ablation", 28),
        ("recovery", 8),
        ("attribution", 36),
        ("protection_dose", 16),
        ("agency_states", 26),
        ("positive_control", 4),
        ("aa_levels", 8),
        ("states_sham", 6),
    ],
)
def test_bundled_sweeps_on_the_embedded_model_pass_every_check(name, conditions, no_model_loads) -> None:
    """Every parameter set goes through the real CLI's checks (configs parse, values allowed), no weights load."""
    from lightning_modules.runs.runner import plan_sweep

    planned, duplicates = plan_sweep(load_sweep(name))
    assert len(planned) == conditions
    assert all(p.header.config["model"]["model_name"] == "embedded" for p in planned)


def test_the_quickstart_slices_pruned_heads_out_so_its_speed_shows_what_pruning_buys(no_model_loads) -> None:
    """Remove mode gives mask mode's logits (contract 2) and real speed-ups; mask stays the default elsewhere."""
    from lightning_modules.runs.runner import plan_sweep

    planned, _ = plan_sweep(load_sweep("quickstart"))
    assert len(planned) == 16 and {p.header.config["model"]["pruning"]["mode"] for p in planned} == {"remove"}
    default = yaml.safe_load((REPO / "configs" / "default.yaml").read_text(encoding="utf-8"))
    assert default["model"]["pruning"]["mode"] == "mask"


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="checks the refusal on a machine without CUDA"
)
@pytest.mark.parametrize("name", ["smoke_cuda", "gpt2_t4"])
def test_gpu_sweeps_parse_and_are_refused_only_for_the_missing_device_or_hub(
    name, no_model_loads, monkeypatch
) -> None:
    """Their configs (CUDA sizes, recovery) parse; here they stop at the device or the offline hub, by name."""
    from lightning_modules.runs.runner import plan_sweep

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError) as info:
        plan_sweep(load_sweep(name))
    assert info.value.key in ("trainer.accelerator", "model.model_name"), str(info.value)


def test_the_gpt2_recovery_config_parses_with_the_cuda_config(no_model_loads, monkeypatch) -> None:
    from lightning_modules.inputs.arguments import InputRefused
    from lightning_modules.lightning_cli import check_args

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputRefused) as info:
        check_args(
            [
                "--config",
                "configs/default.yaml",
                "--config",
                "configs/gpt2.yaml",
                "--config",
                "configs/gpt2_cuda.yaml",
                "--config",
                "configs/gpt2_recovery.yaml",
            ]
        )
    assert info.value.error.key in ("trainer.accelerator", "model.model_name", "model.precision")


def test_a_bundled_sweep_is_found_by_name_from_any_directory(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert find_sweep("quickstart") == find_sweep("quickstart.yaml")
    spec = load_sweep("quickstart")
    assert all(Path(a).is_file() for a in spec.base_args if a.endswith(".yaml"))
    with pytest.raises(ConfigError, match="sweep file 'nope' does not exist; allowed: .*quickstart"):
        find_sweep("nope")


BAD_SWEEPS = [
    ("no-parameters", {"parameters": None}, "has no parameters; allowed: a 'parameters:' mapping"),
    (
        "empty-values",
        {"parameters": {"model.pruning.level": {"values": []}}},
        "sweep parameter 'model.pruning.level' has an empty value list; allowed: a list of at least one value",
    ),
    (
        "unknown-key",
        {"parameters": {"model.nope": {"values": [1, 2]}}},
        "sweep parameter 'model.nope' 1 is not known; allowed: under 'model': agency, calibration",
    ),
    ("bayes", {"method": "bayes"}, "sweep method 'bayes' needs a W&B server to choose runs"),
    (
        "bad-level",
        {"parameters": {"model.pruning.level": {"values": [0, 120]}}},
        "sweep parameter 'model.pruning.level' 120 is invalid; allowed: a number from 0 to 100",
    ),
    (
        "level-text",
        {"parameters": {"model.pruning.level": {"values": ["abc"]}}},
        "sweep parameter 'model.pruning.level' 'abc' is invalid",
    ),
    ("random-without-count", {"method": "random"}, "needs a number of runs"),
    (
        "metric-goal",
        {"metric": {"name": "reference_perplexity", "goal": "lowest"}},
        "has metric {'goal': 'lowest', 'name': 'reference_perplexity'}; allowed: a 'metric:' mapping",
    ),
    (
        "no-values",
        {"parameters": {"model.pruning.level": {"min": 0}}},
        "sweep parameter 'model.pruning.level' has no values; allowed: 'value' or a non-empty 'values' list",
    ),
    (
        "greedy-iterations",
        {"parameters": {"model.generation.temperature": {"values": [0]}, "data.iterations": {"values": [2]}}},
        "sweep parameter 'data.iterations' 2 is invalid with model.generation.temperature 0; allowed: 1 at temperature",
    ),
]


@pytest.mark.parametrize(("change", "expected"), [c[1:] for c in BAD_SWEEPS], ids=[c[0] for c in BAD_SWEEPS])
def test_bad_sweep_is_one_line_before_any_model_loads(
    change, expected, tiny_gpt2_dir, tiny_prompt_file, tmp_path, capsys, monkeypatch, no_model_loads
) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    path = tiny_sweep(tmp_path / "sweep", tiny_gpt2_dir, tiny_prompt_file)
    content = yaml.safe_load(path.read_text())
    content.update(change)
    path.write_text(yaml.safe_dump(content))
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        cli.main(["sweep", str(path), "--output_dir", str(out)])
    assert info.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    assert not out.exists()


def test_malformed_sweep_yaml_names_the_line(tmp_path) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text("method: grid\ncommand: [${env}, ${interpreter}, predict, ${args}]\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML \(line 2, column \d+: .*block list"):
        load_sweep(path)


def test_random_sweep_draws_reproducibly(tiny_gpt2_dir, tiny_prompt_file, tmp_path) -> None:
    parameters = {
        "model.pruning.level": {"distribution": "int_uniform", "min": 0, "max": 70},
        "model.generation.temperature": {"distribution": "uniform", "min": 0.5, "max": 1.5},
        "model.pruning.method": {"values": ["entropy", "magnitude", "random"]},
        "model.agency.enabled": {"values": [False, True]},
        "model.seed": {"value": 3},
    }
    path = tiny_sweep(
        tmp_path / "a", tiny_gpt2_dir, tiny_prompt_file, parameters, method="random", run_cap=7, seed=11
    )
    first, again = expand(load_sweep(path)), expand(load_sweep(path))
    assert first == again and len(first) == 7
    assert all(
        0 <= c["model.pruning.level"] <= 70 and isinstance(c["model.pruning.level"], int) for c in first
    )
    assert all(0.5 <= c["model.generation.temperature"] <= 1.5 and c["model.seed"] == 3 for c in first)
    assert expand(load_sweep(path), count=3) == first[:3]
    other = tiny_sweep(
        tmp_path / "b", tiny_gpt2_dir, tiny_prompt_file, parameters, method="random", run_cap=7, seed=12
    )
    assert expand(load_sweep(other)) != first


def agent_command(sweep_file: Path, params: dict, env: dict[str, str]) -> list[str]:
    """The command line ``wandb agent`` would start for one run of this sweep, built with wandb's own helpers."""
    from wandb.sdk.launch.sweeps import utils as sweep_utils

    config = yaml.safe_load(sweep_file.read_text())
    command = {"args": {key: {"value": value} for key, value in params.items()}, "program": config["program"]}
    sweep_command = sweep_utils.create_sweep_command(config["command"])
    sweep_vars = sweep_utils.create_sweep_command_args(command)
    sweep_vars["interpreter"] = ["python" if shutil.which("python", path=env["PATH"]) else sys.executable]
    sweep_vars["program"] = [command["program"]]
    sweep_vars["env"] = ["/usr/bin/env"]
    command_list = []
    for c in map(str, sweep_command):
        command_list += (sweep_vars.get(c[2:-1]) or []) if c.startswith("${") and c.endswith("}") else [c]
    return command_list


@pytest.mark.slow  # a real wandb agent process
def test_wandb_agent_runs_a_sweep_command_that_writes_a_record(
    tiny_gpt2_dir, tiny_prompt_file, tmp_path
) -> None:
    """The shipped quickstart sweep with a tiny base config, expanded into the exact command ``wandb agent``
    runs, run as a subprocess: its record says it was timed alone."""
    out = tmp_path / "agent-run"
    base = tiny_base_config(
        tmp_path / "quickstart-tiny.yaml", tiny_gpt2_dir, tiny_prompt_file, output_dir=out
    )
    shipped = yaml.safe_load((REPO / "configs" / "sweeps" / "quickstart.yaml").read_text())
    shipped["command"] = [str(base) if c == "configs/quickstart.yaml" else c for c in shipped["command"]]
    sweep_file = tmp_path / "quickstart.yaml"
    sweep_file.write_text(yaml.safe_dump(shipped, sort_keys=False))
    params = expand(load_sweep(sweep_file))[7]  # level 30, agency on, temperature 1.0
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "WANDB_MODE": "offline",
        "OMP_NUM_THREADS": "1",
    }
    command = agent_command(sweep_file, params, env)
    assert command[2:4] == ["cli.py", "predict"] and command[-len(params) :] == as_flags(params)
    result = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (path,) = (out / "records").glob("*.json")
    record = read_record(path)
    assert record.status == "complete" and record.timing.schedule == "alone"
    model = record.config["model"]
    assert model["pruning"]["level"] == 30 and model["agency"]["enabled"] is True
    assert model["generation"]["temperature"] == 1.0 and model["model_name"] == str(tiny_gpt2_dir)
    assert list((out / "wandb").glob("offline-run-*"))
