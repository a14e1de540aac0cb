"""The sweep runner: W&B sweep files load, expand and run the way ``wandb agent`` runs them; bad files are
refused before any model loads; an interrupted sweep resumes to exactly what an uninterrupted one gives."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import yaml
from callbacks.record import read_record
from lightning_modules.sweep import SweepError, SweepInterrupted, as_flags, expand, load_sweep, run_sweep
from run_helpers import (
    REPO,
    comparable,
    comparable_statistics,
    records,
    tiny_base_config,
    tiny_sweep,
    uninterrupted_sweep,
)

import cli


@pytest.fixture
def no_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_modules import model_store

    def forbidden(*args, **kwargs):
        raise AssertionError("a model was loaded for a sweep that should have been refused")

    monkeypatch.setattr(model_store.ModelStore, "base", forbidden)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models run several times faster on one intra-op thread on a small, busy machine."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def quiet_wandb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")


# -- the shipped sweep files ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "count", "base", "levels"),
    [
        ("quickstart", 16, "configs/quickstart.yaml", [0, 30, 50, 70]),
        ("gpt2", 128, "configs/gpt2.yaml", [0, 10, 20, 30, 40, 50, 60, 70]),
        ("distilgpt2", 128, "configs/distilgpt2.yaml", [0, 10, 20, 30, 40, 50, 60, 70]),
    ],
)
def test_shipped_sweeps_expand_to_the_documented_grid(name, count, base, levels) -> None:
    spec = load_sweep(REPO / "configs" / "sweeps" / f"{name}.yaml")
    conditions = expand(spec)
    assert spec.method == "grid" and spec.base_args == ["--config", base] and (REPO / base).is_file()
    assert len(conditions) == count and len({json.dumps(c, sort_keys=True) for c in conditions}) == count
    keys = {"model.pruning.level", "model.pruning.method", "model.agency.enabled", "model.generation.temperature"}
    assert all(set(c) == keys for c in conditions)
    assert sorted({c["model.pruning.level"] for c in conditions}) == levels
    assert {c["model.agency.enabled"] for c in conditions} == {False, True}
    assert {c["model.generation.temperature"] for c in conditions} == {0.7, 1.0}
    methods = {c["model.pruning.method"] for c in conditions}
    assert methods == ({"entropy"} if name == "quickstart" else {"entropy", "random", "magnitude", "gradient"})


def test_shipped_sweep_flags_pass_the_cli_checks(tiny_gpt2_dir, tiny_prompt_file, tmp_path, quiet_wandb) -> None:
    """Every flag a shipped sweep produces is a real config key with a valid value (on the tiny model)."""
    from lightning_modules.sweep import check_condition

    base = tiny_base_config(tmp_path / "tiny.yaml", tiny_gpt2_dir, tiny_prompt_file)
    spec = load_sweep(REPO / "configs" / "sweeps" / "gpt2.yaml")
    seen = set()
    for params in expand(spec):
        flags = tuple(as_flags({k: v for k, v in params.items() if k != "model.pruning.level"}))
        if flags in seen:
            continue
        seen.add(flags)
        flat = check_condition(["--config", "configs/default.yaml", "--config", str(base), *flags])
        assert flat["pruning_method"] == params["model.pruning.method"]
        assert flat["agency"] is params["model.agency.enabled"]
    assert len(seen) == 16


# -- bad sweep files ------------------------------------------------------------------------------------------
BAD_SWEEPS = [
    ("no-parameters", {"parameters": None}, "has no parameters; allowed: a 'parameters:' mapping"),
    ("empty-values", {"parameters": {"model.pruning.level": {"values": []}}},
     "sweep parameter 'model.pruning.level' has an empty value list; allowed: a list of at least one value"),
    ("unknown-key", {"parameters": {"model.nope": {"values": [1, 2]}}},
     "sweep parameter 'model.nope' = 1: config key 'model.nope' (given as '--model.nope=1') is not known; "
     "allowed under 'model':"),
    ("bayes", {"method": "bayes"}, "sweep method 'bayes' needs a W&B server to choose runs"),
    ("bad-level", {"parameters": {"model.pruning.level": {"values": [0, 120]}}},
     "sweep parameter 'model.pruning.level' = 120: pruning level 120 is invalid; allowed: a number from 0 to 100"),
    ("level-text", {"parameters": {"model.pruning.level": {"values": ["abc"]}}},
     "sweep parameter 'model.pruning.level' = 'abc': model.pruning.level 'abc' is invalid"),
    ("random-without-count", {"method": "random"}, "needs a number of runs: run_cap in the file or --count"),
    ("no-values", {"parameters": {"model.pruning.level": {"min": 0}}},
     "sweep parameter 'model.pruning.level' has no values; allowed: 'value' or a non-empty 'values' list"),
]


@pytest.mark.parametrize(("change", "expected"), [c[1:] for c in BAD_SWEEPS], ids=[c[0] for c in BAD_SWEEPS])
def test_bad_sweep_is_one_line_before_any_model_loads(change, expected, tiny_gpt2_dir, tiny_prompt_file,
                                                      tmp_path, capsys, quiet_wandb, no_model_loads) -> None:
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
    with pytest.raises(SweepError, match=r"is not valid YAML \(line 2, column \d+: .*block list"):
        load_sweep(path)


def test_output_dir_that_cannot_be_written_is_refused(tiny_gpt2_dir, tiny_prompt_file, tmp_path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    path = tiny_sweep(tmp_path / "sweep", tiny_gpt2_dir, tiny_prompt_file)
    with pytest.raises(SweepError, match=f"output directory '{blocker}/run' cannot be written"):
        run_sweep(path, output_dir=blocker / "run")


# -- random search ------------------------------------------------------------------------------------------
def test_random_sweep_draws_reproducibly(tiny_gpt2_dir, tiny_prompt_file, tmp_path) -> None:
    parameters = {
        "model.pruning.level": {"distribution": "int_uniform", "min": 0, "max": 70},
        "model.generation.temperature": {"distribution": "uniform", "min": 0.5, "max": 1.5},
        "model.pruning.method": {"values": ["entropy", "magnitude", "random"]},
        "model.agency.enabled": {"values": [False, True]},
        "model.seed": {"value": 3},
    }
    path = tiny_sweep(tmp_path / "a", tiny_gpt2_dir, tiny_prompt_file, parameters, method="random", run_cap=7,
                      seed=11)
    first, again = expand(load_sweep(path)), expand(load_sweep(path))
    assert first == again and len(first) == 7
    assert all(0 <= c["model.pruning.level"] <= 70 and isinstance(c["model.pruning.level"], int) for c in first)
    assert all(0.5 <= c["model.generation.temperature"] <= 1.5 and c["model.seed"] == 3 for c in first)
    assert len(expand(load_sweep(path), count=3)) == 3 and expand(load_sweep(path), count=3) == first[:3]
    other = tiny_sweep(tmp_path / "b", tiny_gpt2_dir, tiny_prompt_file, parameters, method="random", run_cap=7,
                       seed=12)
    assert expand(load_sweep(other)) != first


# -- the same file under ``wandb agent`` ---------------------------------------------------------------------
def agent_command(sweep_file: Path, params: dict, env: dict[str, str]) -> list[str]:
    """The command line ``wandb agent`` would start for one run of this sweep (wandb/wandb_agent.py
    Agent._command_run, on a POSIX machine), built with wandb's own helpers."""
    from wandb.sdk.launch.sweeps import utils as sweep_utils

    config = yaml.safe_load(sweep_file.read_text())
    command = {"args": {key: {"value": value} for key, value in params.items()}, "program": config["program"]}
    sweep_command = sweep_utils.create_sweep_command(config["command"])
    sweep_vars = sweep_utils.create_sweep_command_args(command)
    interpreter = "python" if shutil.which("python", path=env["PATH"]) else sys.executable
    sweep_vars["interpreter"] = [interpreter]
    sweep_vars["program"] = [command["program"]]
    sweep_vars["env"] = ["/usr/bin/env"]
    command_list = []
    for c in sweep_command:
        c = str(c)
        if c.startswith("${") and c.endswith("}"):
            command_list += sweep_vars.get(c[2:-1]) or []
        else:
            command_list += [c]
    return command_list


def test_wandb_agent_runs_a_sweep_command_that_writes_a_record(tiny_gpt2_dir, tiny_prompt_file, tmp_path) -> None:
    """A copy of the quickstart sweep whose base config is the tiny model, expanded into the exact command
    ``wandb agent`` runs (from an environment where ``python`` is this interpreter), run as a subprocess."""
    out = tmp_path / "agent-run"
    base = tiny_base_config(tmp_path / "quickstart-tiny.yaml", tiny_gpt2_dir, tiny_prompt_file, output_dir=out)
    shipped = yaml.safe_load((REPO / "configs" / "sweeps" / "quickstart.yaml").read_text())
    shipped["command"] = [str(base) if c == "configs/quickstart.yaml" else c for c in shipped["command"]]
    sweep_file = tmp_path / "quickstart.yaml"
    sweep_file.write_text(yaml.safe_dump(shipped, sort_keys=False))

    params = expand(load_sweep(sweep_file))[7]  # level 30, agency on, temperature 1.0
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    command = agent_command(sweep_file, params, env)
    assert command[:5] == ["/usr/bin/env", command[1], "cli.py", "predict", "--config"]
    assert command[5:] == [str(base), *as_flags(params)]  # the local runner passes the very same flags

    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
                            stdin=subprocess.DEVNULL)
    said = [line for line in result.stderr.splitlines() if "Error" in line or line.startswith(("error", "warn"))]
    assert result.returncode == 0, "\n".join([*said, "...", result.stderr[-2000:]])
    (path,) = (out / "records").glob("*.json")
    record = read_record(path)
    assert record["status"] == "complete"
    assert record["config"]["pruning_level"] == 30 and record["config"]["agency"] is True
    assert record["config"]["temperature"] == 1.0 and record["config"]["model"] == str(tiny_gpt2_dir)
    assert list((out / "wandb").glob("offline-run-*"))


# -- resume ---------------------------------------------------------------------------------------------------
class SignalDuringPredict(L.Callback):
    """Sends this process SIGINT after the first batch, as a Ctrl-C in the middle of a condition would."""

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        os.kill(os.getpid(), signal.SIGINT)


@pytest.fixture(scope="module")
def uninterrupted(tiny_gpt2_dir, tiny_prompt_file, tmp_path_factory) -> tuple[Path, Path]:
    """One uninterrupted in-process sweep of 6 conditions: the reference end state."""
    return uninterrupted_sweep(tmp_path_factory.mktemp("uninterrupted"), tiny_gpt2_dir, tiny_prompt_file)


def test_interrupted_sweep_resumes_to_the_uninterrupted_records_and_statistics(uninterrupted, tmp_path, capsys,
                                                                              monkeypatch, quiet_wandb) -> None:
    from lightning_modules import lightning_cli
    from reporting.report import write_report

    sweep_file, reference = uninterrupted
    real_run_predict = lightning_cli.run_predict
    calls = []

    def run_predict(argv, **trainer_defaults):
        calls.append(argv)
        if len(calls) == 3:  # Ctrl-C half-way through the sweep, inside the third condition
            trainer_defaults["callbacks"] = [SignalDuringPredict()]
        return real_run_predict(argv, **trainer_defaults)

    monkeypatch.setattr(lightning_cli, "run_predict", run_predict)
    run_dir = tmp_path / "run"
    with pytest.raises(SweepInterrupted, match="interrupted by SIGINT") as info:
        run_sweep(sweep_file, output_dir=run_dir, quiet=True)
    assert info.value.exit_code == 130 and f"--resume {run_dir}" in str(info.value)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # pytest's Ctrl-C is back
    statuses = sorted(r["status"] for r in records(run_dir).values())
    assert statuses == ["complete", "complete", "incomplete"]

    monkeypatch.setattr(lightning_cli, "run_predict", real_run_predict)
    capsys.readouterr()
    run_sweep(sweep_file, resume=run_dir, quiet=True)
    captured = capsys.readouterr()
    assert "6 conditions, 2 already recorded, 4 to run" in captured.out  # finished ones are skipped
    assert "is incomplete; its condition runs again" in captured.err

    resumed, expected = records(run_dir), records(reference)
    assert sorted(resumed) == sorted(expected) and len(resumed) == 6  # exactly one record per condition
    for name, record in resumed.items():
        assert record["status"] == "complete" and read_record(run_dir / "records" / name)
        assert comparable(record) == comparable(expected[name]), name

    ours = write_report([run_dir], tmp_path / "report-resumed")
    theirs = write_report([reference], tmp_path / "report-reference")
    assert ours.n_records == theirs.n_records == 6
    assert comparable_statistics(json.loads(ours.statistics_path.read_text())) == \
        comparable_statistics(json.loads(theirs.statistics_path.read_text()))


def test_resume_reruns_a_truncated_or_edited_record_and_says_so(uninterrupted, tmp_path, capsys,
                                                                 quiet_wandb) -> None:
    sweep_file, reference = uninterrupted
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    paths = sorted((run_dir / "records").glob("*.json"))
    truncated, edited = paths[0], paths[1]
    truncated.write_text(truncated.read_text()[:300])
    payload = json.loads(edited.read_text())
    payload["condition_metrics"]["corpus_perplexity"] = 1.0  # a flattering number typed in by hand
    edited.write_text(json.dumps(payload))
    (run_dir / "records" / f".{paths[2].name}.abc.tmp").write_text("{")  # a writer killed with SIGKILL

    capsys.readouterr()
    run_sweep(sweep_file, resume=run_dir, quiet=True)
    captured = capsys.readouterr()
    assert "6 conditions, 4 already recorded, 2 to run" in captured.out
    assert f"record {truncated} cannot be read" in captured.err
    assert f"record {edited} does not match its checksum" in captured.err
    assert not list((run_dir / "records").glob(".*.tmp"))
    again = records(run_dir)
    assert len(again) == 6 and all(r["status"] == "complete" for r in again.values())
    assert again[edited.name]["condition_metrics"]["corpus_perplexity"] != 1.0
    for name, record in records(reference).items():
        assert comparable(again[name]) == comparable(record), name


def test_report_names_a_truncated_or_edited_record_and_does_not_count_it(uninterrupted, tmp_path) -> None:
    _, reference = uninterrupted
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    truncated, edited = sorted((run_dir / "records").glob("*.json"))[:2]
    truncated.write_text(truncated.read_text()[:-40])
    payload = json.loads(edited.read_text())
    payload["samples"][0]["metrics"]["distinct_1"] = 0.0
    edited.write_text(json.dumps(payload))
    result = subprocess.run([sys.executable, "cli.py", "report", str(run_dir), "--no-wandb"], cwd=REPO,
                            capture_output=True, text=True, timeout=300, env={**os.environ, "WANDB_MODE": "disabled"})
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: record")]
    assert any(str(truncated) in w and "cannot be read" in w for w in warnings)
    assert any(str(edited) in w and "does not match its checksum" in w for w in warnings)
    statistics = json.loads((run_dir / "report" / "statistics.json").read_text())
    assert statistics["inputs"]["n_records"] == 4
    assert truncated.stem not in statistics["inputs"]["records"] and edited.stem not in statistics["inputs"]["records"]


def test_every_metric_a_real_run_records_is_in_the_reporting_catalogue(uninterrupted) -> None:
    from reporting.records import load_records
    from reporting.statistics import compute_statistics

    _, run_dir = uninterrupted
    loaded = load_records([run_dir])
    assert loaded.records and not loaded.problems
    assert not [p for p in compute_statistics(loaded.records).problems if "catalogue" in p]
