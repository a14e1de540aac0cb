"""The local sweep runner: distinct conditions, arms timed side by side in sessions spread over the sweep, a speed
A/A, and resume to the uninterrupted end state."""

from __future__ import annotations

import json
import os
import shutil
import signal

import lightning as L
import pytest
from run_helpers import comparable, comparable_statistics, records, tiny_sweep, uninterrupted_sweep

from lightning_modules.runs.runner import SweepInterrupted, run_sweep
from record.errors import ConfigError
from record.storage import read_record


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def quiet_wandb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")


@pytest.fixture(scope="module")
def uninterrupted(tiny_gpt2_dir, tiny_prompt_file, tmp_path_factory):
    """One uninterrupted in-process sweep of 6 conditions: the reference end state."""
    return uninterrupted_sweep(tmp_path_factory.mktemp("uninterrupted"), tiny_gpt2_dir, tiny_prompt_file)


def _by_level(run_dir) -> dict[float, list]:
    by_level: dict[float, list] = {}
    for record in (read_record(p) for p in (run_dir / "records").glob("*.json")):
        by_level.setdefault(record.config["model"]["pruning"]["level"], []).append(record)
    return by_level


def test_arms_of_a_cell_are_timed_side_by_side_in_three_sessions_positions_counterbalanced(
    uninterrupted,
) -> None:
    _, run_dir = uninterrupted
    for level, arms in _by_level(run_dir).items():
        assert len(arms) == 2, level
        assert all(r.timing.schedule == "interleaved" for r in arms)
        timed = arms[0].timing.arms
        assert {r.condition_id for r in arms} <= set(timed) and len(timed) == (3 if level == 25 else 2)
        sessions = {r.session for r in arms[0].timing.repeats}
        assert len(sessions) == 3  # timing.sessions' default
        for session in sessions:
            rounds = [
                [r for r in arm.timing.repeats if r.session == session] for arm in arms
            ]  # per arm, its repeats in this session
            assert [r.repeat for r in rounds[0]] == [r.repeat for r in rounds[1]]  # paired by round
            for arm_rounds in rounds:  # every arm in every position equally often within the session
                positions = sorted(r.position for r in arm_rounds)
                assert positions == sorted(list(range(len(timed))) * (len(arm_rounds) // len(timed)))


def test_one_cell_times_its_baseline_again_as_a_speed_aa_in_the_same_sessions(uninterrupted) -> None:
    """The first cell with a baseline and a pruned level (25%: levels 0, 25, 50) holds the speed A/A."""
    _, run_dir = uninterrupted
    found = [r for arms in _by_level(run_dir).values() for r in arms if r.speed_aa is not None]
    assert len(found) == 1
    (baseline,) = found
    assert baseline.config["model"]["pruning"]["level"] == 25
    assert not baseline.config["model"]["agency"]["enabled"]
    aa = baseline.speed_aa
    assert baseline.condition_id + "~speed-aa" in aa.arms and aa.arms == baseline.timing.arms
    pairs = {(r.session, r.repeat) for r in baseline.timing.repeats}
    assert {(r.session, r.repeat) for r in aa.repeats} == pairs and len(pairs) == 9  # 3 sessions x 3 rounds
    assert all("tokens_per_second" in r.metrics for r in aa.repeats)


class TimingSpy:
    """Wraps the sweep's ``time_session``: which cell's session was timed, in what order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from lightning_modules.runs import timing

        self.calls: list[tuple[float, int]] = []
        real = timing.time_session

        def spy(cell, session):
            level = cell.arms[0].header.config["model"]["pruning"]["level"]
            self.calls.append((level, len(cell.step.sessions)))
            return real(cell, session)

        monkeypatch.setattr(timing, "time_session", spy)


def test_sessions_are_spread_over_the_sweep_and_resume_reuses_every_measured_one(
    tiny_gpt2_dir, tiny_prompt_file, tmp_path, quiet_wandb, monkeypatch
) -> None:
    parameters = {
        "model.pruning.level": {"values": [0, 50]},
        "model.agency.enabled": {"values": [False, True]},
    }
    sweep_file = tiny_sweep(tmp_path / "s", tiny_gpt2_dir, tiny_prompt_file, parameters)
    spy = TimingSpy(monkeypatch)
    run_dir = run_sweep(sweep_file, output_dir=tmp_path / "run", quiet=True)
    assert spy.calls == [(0, 0), (50, 0), (0, 1), (50, 1), (0, 2), (50, 2)]  # session k of all before k + 1
    files = sorted((run_dir / "timings").glob("*.json"))
    assert len(files) == 2
    first = {r.condition_id: r.timing for arms in _by_level(run_dir).values() for r in arms}

    # Every record gone, every session kept: resuming times nothing and hands over the same sessions.
    spy.calls.clear()
    for path in (run_dir / "records").glob("*.json"):
        path.unlink()
    run_sweep(sweep_file, resume=run_dir, quiet=True)
    assert spy.calls == []
    again = {r.condition_id: r.timing for arms in _by_level(run_dir).values() for r in arms}
    assert again == first

    # One cell's file keeps only its first session (as if interrupted there): only the two missing are timed.
    payload = json.loads(files[0].read_text())
    kept = payload["sessions"][0]
    payload["sessions"] = [kept]
    files[0].write_text(json.dumps(payload))
    for path in (run_dir / "records").glob("*.json"):
        path.unlink()
    run_sweep(sweep_file, resume=run_dir, quiet=True)
    assert sorted(k for _, k in spy.calls) == [1, 2] and len({level for level, _ in spy.calls}) == 1
    resumed = [r for arms in _by_level(run_dir).values() for r in arms if r.condition_id in kept]
    assert resumed and all(
        r.timing.repeats[0].session == kept[r.condition_id]["repeats"][0]["session"] for r in resumed
    )
    assert all(len({x.session for x in r.timing.repeats}) == 3 for r in resumed)


def test_a_session_file_that_cannot_be_read_is_named_and_its_cell_timed_again(
    tiny_gpt2_dir, tiny_prompt_file, tmp_path, quiet_wandb, monkeypatch, capsys
) -> None:
    parameters = {"model.pruning.level": {"value": 50}, "model.agency.enabled": {"values": [False, True]}}
    sweep_file = tiny_sweep(
        tmp_path / "s",
        tiny_gpt2_dir,
        tiny_prompt_file,
        parameters,
    )
    run_dir = tmp_path / "run"
    (run_dir / "timings").mkdir(parents=True)
    run_sweep(sweep_file, output_dir=run_dir, quiet=True)
    (path,) = (run_dir / "timings").glob("*.json")
    path.write_text(path.read_text()[:200])
    for record in (run_dir / "records").glob("*.json"):
        record.unlink()
    spy = TimingSpy(monkeypatch)
    capsys.readouterr()
    run_sweep(sweep_file, resume=run_dir, quiet=True)
    assert f"timing sessions {path} cannot be used" in capsys.readouterr().err
    assert [k for _, k in spy.calls] == [0, 1, 2]


def test_sweeping_an_agency_key_writes_one_record_per_setting_and_one_baseline(
    tiny_gpt2_dir, tiny_prompt_file, tmp_path, quiet_wandb, capsys
) -> None:
    parameters = {
        "model.pruning.level": {"value": 25},
        "model.agency.enabled": {"values": [False, True]},
        "model.agency.overload_threshold": {"values": [0.85, 0.95]},
        "model.agency.overload_mode": {"value": "absolute"},
    }
    sweep_file = tiny_sweep(tmp_path / "s", tiny_gpt2_dir, tiny_prompt_file, parameters)
    run_dir = run_sweep(sweep_file, output_dir=tmp_path / "run", quiet=True)
    assert "3 conditions (1 parameter sets named a condition already listed)" in capsys.readouterr().out
    found = [read_record(p) for p in (run_dir / "records").glob("*.json")]
    agency = sorted(
        r.config["model"]["agency"]["overload_threshold"]
        for r in found
        if r.config["model"]["agency"]["enabled"]
    )
    assert agency == [0.85, 0.95] and len(found) == 3
    assert len({r.timing.session for r in found}) == 1  # the three arms of the cell were timed together


def test_each_condition_is_parsed_and_checked_once_and_run_from_that_cli(
    tiny_gpt2_dir, tiny_prompt_file, tmp_path, quiet_wandb, monkeypatch
) -> None:
    """One LightningCLI per condition, every one built (checked) before the first runs."""
    from lightning_modules import lightning_cli

    events: list[tuple[str, int]] = []
    real_init, real_run = lightning_cli.ExperimentCLI.__init__, lightning_cli.ExperimentCLI.run

    def init(cli, *args, **kwargs):
        events.append(("built", id(cli)))
        real_init(cli, *args, **kwargs)

    def run(cli, timing=None):
        events.append(("ran", id(cli)))
        return real_run(cli, timing)

    monkeypatch.setattr(lightning_cli.ExperimentCLI, "__init__", init)
    monkeypatch.setattr(lightning_cli.ExperimentCLI, "run", run)
    parameters = {"model.pruning.level": {"values": [0, 25]}, "model.agency.enabled": {"value": False}}
    sweep_file = tiny_sweep(tmp_path / "s", tiny_gpt2_dir, tiny_prompt_file, parameters)
    run_dir = run_sweep(sweep_file, output_dir=tmp_path / "run", quiet=True)
    assert len(list((run_dir / "records").glob("*.json"))) == 2
    built = [cli for event, cli in events if event == "built"]
    ran = [cli for event, cli in events if event == "ran"]
    assert len(built) == 2 and sorted(ran) == sorted(built)  # each built CLI ran once, no other was built
    assert [event for event, _ in events] == ["built", "built", "ran", "ran"]  # all checked before any runs


@pytest.mark.slow  # fits, then measures, every condition of a sweep
def test_a_recover_sweep_times_the_recovered_arms_of_a_cell_side_by_side(
    tiny_gpt2_dir, tiny_prompt_file, tmp_path, quiet_wandb
) -> None:
    """Every condition is measured, fitted, and measured again; the recovered arms are paired in time too."""
    recovery = {"steps": 2, "checkpoint_every": 2, "window": 32, "warmup_steps": 1, "batch_size": 2}
    parameters = {"model.pruning.level": {"value": 50}, "model.agency.enabled": {"values": [False, True]}}
    sweep_file = tiny_sweep(
        tmp_path / "s",
        tiny_gpt2_dir,
        tiny_prompt_file,
        parameters,
        command="recover",
        model={"recovery": recovery},
    )
    run_dir = run_sweep(sweep_file, output_dir=tmp_path / "run", quiet=True)
    found = [read_record(p) for p in (run_dir / "records").glob("*.json")]
    assert len(found) == 4 and all(r.status == "complete" for r in found)
    for recovered in (True, False):
        arms = [r for r in found if (r.recovery is not None) == recovered]
        assert len(arms) == 2 and len({r.timing.session for r in arms}) == 1, recovered
        assert all(r.timing.schedule == "interleaved" for r in arms)
    before = {r.timing.session for r in found if r.recovery is None}
    assert before != {r.timing.session for r in found if r.recovery is not None}


def test_output_dir_that_cannot_be_written_is_refused(tiny_gpt2_dir, tiny_prompt_file, tmp_path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    path = tiny_sweep(tmp_path / "sweep", tiny_gpt2_dir, tiny_prompt_file)
    with pytest.raises(ConfigError, match=f"output directory '{blocker}/run' cannot be written"):
        run_sweep(path, output_dir=blocker / "run")


class SignalDuringPredict(L.Callback):
    """Sends this process SIGINT after the first batch, as a Ctrl-C in the middle of a condition would."""

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.slow  # a whole sweep, interrupted and resumed
def test_interrupted_sweep_resumes_to_the_uninterrupted_records_and_statistics(
    uninterrupted, tmp_path, capsys, monkeypatch, quiet_wandb
) -> None:
    from lightning_modules import lightning_cli
    from reporting.report import ReportOptions, write_report

    sweep_file, reference = uninterrupted
    real_run = lightning_cli.ExperimentCLI.run
    calls = []

    def run(cli, timing=None):
        calls.append(cli)
        if len(calls) == 3:  # Ctrl-C half-way through the sweep, inside the third condition
            cli.trainer.callbacks.append(SignalDuringPredict())
        return real_run(cli, timing)

    monkeypatch.setattr(lightning_cli.ExperimentCLI, "run", run)
    run_dir = tmp_path / "run"
    handler_before = signal.getsignal(signal.SIGINT)
    with pytest.raises(SweepInterrupted, match="interrupted by SIGINT") as info:
        run_sweep(sweep_file, output_dir=run_dir, quiet=True)
    assert info.value.exit_code == 130 and f"--resume {run_dir}" in str(info.value)
    assert (
        signal.getsignal(signal.SIGINT) == handler_before
    )  # whatever was installed is back (nohup: SIG_IGN)
    statuses = sorted(r["status"] for r in records(run_dir).values())
    assert statuses == ["complete", "complete", "incomplete"]

    monkeypatch.setattr(lightning_cli.ExperimentCLI, "run", real_run)
    capsys.readouterr()
    run_sweep(sweep_file, resume=run_dir, quiet=True)
    captured = capsys.readouterr()
    assert "6 conditions, 2 already recorded, 4 to run" in captured.out  # finished ones are skipped
    assert "is incomplete; its condition runs again" in captured.err
    resumed, expected = records(run_dir), records(reference)
    assert sorted(resumed) == sorted(expected) and len(resumed) == 6  # exactly one record per condition
    for name, record in resumed.items():
        assert record["status"] == "complete"
        assert comparable(record) == comparable(expected[name]), name
    options = ReportOptions(plots=False)
    ours = write_report([run_dir], tmp_path / "report-resumed", options)
    theirs = write_report([reference], tmp_path / "report-reference", options)
    assert ours.n_records == theirs.n_records == 6
    assert comparable_statistics(json.loads(ours.statistics_path.read_text())) == comparable_statistics(
        json.loads(theirs.statistics_path.read_text())
    )


@pytest.mark.slow  # runs a sweep, then resumes it
def test_resume_reruns_a_truncated_or_edited_record_and_says_so(
    uninterrupted, tmp_path, capsys, quiet_wandb
) -> None:
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


def test_a_sweep_set_runs_its_files_into_one_folder_and_evaluation_only_seeds_collapse(
    tiny_gpt2_dir, tiny_prompt_file, tmp_path, quiet_wandb, capsys
) -> None:
    """A folder of sweep files is one run: evaluation-only conditions are not timed, a deterministic ranking's
    seeds are one condition, a random ranking's seeds are draws, and sweep.yaml says what the set varied."""
    import yaml

    only = {
        "evaluation": {"window": 32, "stride": 32, "max_tokens": 128, "only": True, "induction_sequences": 2}
    }
    rankings = {
        "model.pruning.level": {"value": 25},
        "model.pruning.method": {"values": ["magnitude", "random"]},
        "model.seed": {"values": [0, 1]},
    }
    agency = {"model.pruning.level": {"value": 25}, "model.agency.enabled": {"value": True}}
    folder = tmp_path / "set"
    for name, parameters in (("1_rankings", rankings), ("2_agency", agency)):
        made = tiny_sweep(tmp_path / name, tiny_gpt2_dir, tiny_prompt_file, parameters, model=only)
        folder.mkdir(exist_ok=True)
        (folder / f"{name}.yaml").write_text(made.read_text(encoding="utf-8"), encoding="utf-8")
    run_dir = run_sweep(folder, output_dir=tmp_path / "run", quiet=True)
    out = capsys.readouterr().out
    assert "sweep set: 4 conditions (1 parameter sets named a condition already listed)" in out
    found = [read_record(p) for p in (run_dir / "records").glob("*.json")]
    assert sorted((r.config["model"]["pruning"]["method"], r.config["model"]["seed"]) for r in found) == [
        ("entropy", None),
        ("magnitude", None),
        ("random", 0),
        ("random", 1),
    ]
    assert all(r.timing is None and r.samples == [] for r in found)
    assert all("corpus_kl" in r.condition_metrics for r in found)
    merged = yaml.safe_load((run_dir / "sweep.yaml").read_text(encoding="utf-8"))["parameters"]
    assert merged["model.pruning.method"] == {"values": ["magnitude", "random"]}
    assert merged["model.agency.enabled"] == {"value": True}
