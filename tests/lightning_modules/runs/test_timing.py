"""A sweep's cells are timed through the one timing step, and each condition is handed its arm's timing when it
runs: its speed callback only records it. A condition whose cell could not be timed times itself alone."""

from __future__ import annotations

import pytest
from run_helpers import tiny_sweep

from callbacks import speed
from lightning_modules import lightning_cli
from lightning_modules.module import PruningExperiment
from lightning_modules.runs import timing
from lightning_modules.runs.runner import run_sweep
from record.storage import read_record

CELL = {"model.pruning.level": {"value": 50}, "model.agency.enabled": {"values": [False, True]}}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def quiet_wandb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")


class CallbackTimingSpy:
    """Counts the speed callback's own timing (``time_alone``) and the decodes of a module's own model, which only
    that timing makes (the sweep's timing decodes each arm's state built for its session)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.alone: list[str] = []
        self.own_decodes = 0
        real_alone, real_decode = speed.time_alone, PruningExperiment.timed_decode

        def alone(arm, *args):
            self.alone.append(arm.condition_id)
            return real_alone(arm, *args)

        def decode(module, prompts, seeds, num_tokens, condition=None):
            self.own_decodes += condition is None
            return real_decode(module, prompts, seeds, num_tokens, condition=condition)

        monkeypatch.setattr(speed, "time_alone", alone)
        monkeypatch.setattr(PruningExperiment, "timed_decode", decode)


def _records(run_dir) -> dict:
    return {r.condition_id: r for r in map(read_record, (run_dir / "records").glob("*.json"))}


def test_a_sweep_hands_each_condition_its_arms_timing_and_its_speed_callback_never_times(
    tiny_gpt2_dir, tiny_prompt_file, tmp_path, monkeypatch
) -> None:
    handed = {}
    real_run = lightning_cli.ExperimentCLI.run

    def run(cli, timing=None):
        handed[cli.header.condition_id] = timing
        return real_run(cli, timing)

    monkeypatch.setattr(lightning_cli.ExperimentCLI, "run", run)
    spy = CallbackTimingSpy(monkeypatch)
    sweep_file = tiny_sweep(tmp_path / "s", tiny_gpt2_dir, tiny_prompt_file, CELL)
    records = _records(run_sweep(sweep_file, output_dir=tmp_path / "run", quiet=True))
    assert spy.alone == [] and spy.own_decodes == 0  # the callbacks only recorded what they were handed
    assert sorted(handed) == sorted(records) and len(records) == 2
    for condition_id, record in records.items():
        assert record.timing == handed[condition_id].timing and record.timing.schedule == "interleaved"
        assert record.speed_aa == handed[condition_id].speed_aa
    assert sum(r.speed_aa is not None for r in records.values()) == 1  # the baseline's speed A/A


def test_a_cell_whose_timing_fails_has_each_condition_time_itself_alone_through_the_same_step(
    tiny_gpt2_dir, tiny_prompt_file, tmp_path, monkeypatch, capsys
) -> None:
    def broken(cell, session):
        raise RuntimeError("no room for two arms")

    monkeypatch.setattr(timing, "time_session", broken)
    spy = CallbackTimingSpy(monkeypatch)
    sweep_file = tiny_sweep(tmp_path / "s", tiny_gpt2_dir, tiny_prompt_file, CELL)
    run_dir = run_sweep(sweep_file, output_dir=tmp_path / "run", quiet=True)
    assert "(RuntimeError: no room for two arms); each is timed alone" in capsys.readouterr().err
    records = _records(run_dir)
    assert sorted(spy.alone) == sorted(records) and len(records) == 2
    assert all(r.timing.schedule == "alone" and r.speed_aa is None for r in records.values())
    assert not list((run_dir / "timings").glob("*.json"))
