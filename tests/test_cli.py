"""The command line refuses bad input before any model loads: one ``error:`` line naming the value and what is
allowed, exit code 2, no traceback.

Most cases run in-process (``cli.main``) with the model loader replaced by one that fails the test, so
"before any model loads" is checked directly; a handful run as real subprocesses, in parallel, to pin what
a user sees on stderr and the exit code of the real program.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import cli

REPO = Path(__file__).resolve().parents[1]
TINY_FLAGS = [
    "--model.calibration.window=64",
    "--model.calibration.max_tokens=512",
    "--model.evaluation.window=32",
    "--model.evaluation.stride=16",
    "--model.evaluation.max_tokens=256",
    "--timing.repeats=2",
]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad-inputs")
    files = {
        "empty": root / "empty.txt",
        "latin1": root / "latin1.txt",
        "binary": root / "binary.bin",
        "bad_yaml": root / "bad.yaml",
        "list_yaml": root / "list.yaml",
        "unknown_yaml": root / "unknown.yaml",
        "a_file": root / "a_file",
        "bert": root / "bert",
    }
    files["empty"].write_text("  \n\n", encoding="utf-8")
    files["latin1"].write_bytes("caf\u00e9 au lait\n".encode("latin-1"))
    files["binary"].write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    files["bad_yaml"].write_text("model:\n  pruning: [level: 3\n", encoding="utf-8")
    files["list_yaml"].write_text("- model\n- data\n", encoding="utf-8")
    files["unknown_yaml"].write_text("model:\n  nope: 1\n", encoding="utf-8")
    files["a_file"].write_text("a regular file, not a folder\n", encoding="utf-8")
    files["bert"].mkdir()
    (files["bert"] / "config.json").write_text('{"model_type": "bert", "architectures": ["BertModel"]}')
    return files


@pytest.fixture
def base_args(tiny_gpt2_dir: Path, tiny_prompt_file: Path, tmp_path: Path) -> list[str]:
    return [
        "--config",
        "configs/default.yaml",
        f"--model.model_name={tiny_gpt2_dir}",
        f"--data.prompt_file={tiny_prompt_file}",
        *TINY_FLAGS,
        f"--record.output_dir={tmp_path / 'run'}",
    ]


@pytest.fixture
def no_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any weight load fails the test: a refusal must come from the checks alone."""
    from lightning_modules import store
    from lightning_modules.models import sources

    def forbidden(*args, **kwargs):
        raise AssertionError("a model was loaded for an input that should have been refused")

    monkeypatch.setattr(store.ModelStore, "base", forbidden)
    monkeypatch.setattr(sources, "load_model", forbidden)
    monkeypatch.setattr(store, "load_model", forbidden)


def _replace(args: list[str], flag: str) -> list[str]:
    key = flag.split("=", 1)[0]
    return [a for a in args if not a.startswith(key + "=")] + [flag]


BAD_INPUTS = [
    # (id, flags (with {placeholders} for bad_files), what the one line must contain)
    (
        "level-negative",
        ["--model.pruning.level=-5"],
        "model.pruning.level -5 is invalid; allowed: a number from 0 to 100",
    ),
    (
        "level-too-high",
        ["--model.pruning.level=120"],
        "model.pruning.level 120 is invalid; allowed: a number from 0",
    ),
    (
        "level-text",
        ["--model.pruning.level=abc"],
        "model.pruning.level 'abc' is invalid; allowed: a number from 0",
    ),
    (
        "level-empties-a-layer",
        ["--model.pruning.level=100"],
        "model.pruning.level 100 would leave a layer with no head (2 layers x 4 heads); allowed: at most 75.0, "
        "or set model.pruning.allow_empty_layers=true",
    ),
    (
        "damp-toward",
        ["--model.agency.damp_toward=median"],
        "model.agency.damp_toward 'median' is invalid; allowed: zero, mean",
    ),
    (
        "compensate",
        ["--model.pruning.compensate=median"],
        "model.pruning.compensate 'median' is invalid; allowed: none, mean",
    ),
    (
        "evaluation-only",
        ["--model.evaluation.only=maybe"],
        "model.evaluation.only 'maybe' is invalid; allowed: true or false",
    ),
    (
        "induction-sequences",
        ["--model.evaluation.induction_sequences=-1"],
        "model.evaluation.induction_sequences -1 is invalid; allowed: an integer >= 0 (0: no induction probe)",
    ),
    (
        "induction-length",
        ["--model.evaluation.induction_length=1"],
        "model.evaluation.induction_length 1 is invalid; allowed: an integer >= 2",
    ),
    (
        "evaluation-window",
        ["--model.evaluation.window=1"],
        "model.evaluation.window 1 is invalid; allowed: an integer >= 2",
    ),
    (
        "method",
        ["--model.pruning.method=foo"],
        "model.pruning.method 'foo' is invalid; allowed: entropy, entropy_low",
    ),
    (
        "prune-mode",
        ["--model.pruning.mode=bar"],
        "model.pruning.mode 'bar' is invalid; allowed: mask, remove",
    ),
    (
        "model-missing",
        ["--model.model_name=no/such-model"],
        "model.model_name 'no/such-model' is not a local directory",
    ),
    (
        "model-architecture",
        ["--model.model_name={bert}"],
        "model '{bert}' has architecture 'bert', which is not supported; allowed: gpt2, llama, gemma3_text",
    ),
    (
        "prompts-missing",
        ["--data.prompt_file={a_file}/prompts.txt"],
        "prompt file '{a_file}/prompts.txt' does not exist or is not a file; allowed: a UTF-8 text file",
    ),
    (
        "prompts-empty",
        ["--data.prompt_file={empty}"],
        "prompt file '{empty}' is empty; allowed: a UTF-8 text file",
    ),
    ("prompts-latin1", ["--data.prompt_file={latin1}"], "prompt file '{latin1}' is not UTF-8 text (byte 3)"),
    (
        "prompts-binary",
        ["--data.prompt_file={binary}"],
        "prompt file '{binary}' is binary (contains NUL bytes)",
    ),
    (
        "tokens-zero",
        ["--model.generation.num_tokens=0"],
        "model.generation.num_tokens 0 is invalid; allowed: an integer >= 1",
    ),
    (
        "tokens-past-context",
        ["--model.generation.num_tokens=500"],
        "model.generation.num_tokens 500 is past the context of model '{model}' (128); allowed: 1 to 127",
    ),
    (
        "temperature",
        ["--model.generation.temperature=-1"],
        "model.generation.temperature -1 is invalid; allowed: a number >= 0",
    ),
    (
        "greedy-with-iterations",
        ["--model.generation.temperature=0", "--data.iterations=2"],
        "data.iterations 2 is invalid with model.generation.temperature 0; allowed: 1 at temperature 0",
    ),
    ("batch-size", ["--data.batch_size=0"], "data.batch_size 0 is invalid; allowed: an integer >= 1"),
    ("batch-size-text", ["--data.batch_size=x"], "data.batch_size 'x' is invalid; allowed: an integer"),
    (
        "evaluation-window",
        ["--model.evaluation.window=1"],
        "model.evaluation.window 1 is invalid; allowed: an integer >= 2",
    ),
    ("timing-repeats", ["--timing.repeats=0"], "timing.repeats 0 is invalid; allowed: an integer >= 1"),
    (
        "float16-on-cpu",
        ["--model.precision=float16"],
        "model.precision 'float16' is not supported on device cpu; allowed: float32, bfloat16",
    ),
    (
        "cuda-missing",
        ["--trainer.accelerator=cuda"],
        "device 'cuda' is not available on this machine (no CUDA device); allowed: auto, cpu",
    ),
    (
        "unknown-key",
        ["--model.nope=1"],
        "config key 'model.nope' (given as '--model.nope=1') is not known; "
        "allowed: under 'model': agency, calibration, checkpoint, evaluation, generation, model_name, precision, pruning, "
        "recovery, seed",
    ),
    (
        "misspelt-key",
        ["--model.pruning.levle=5"],
        "(did you mean 'model.pruning.level'?); allowed: under "
        "'model.pruning': allow_empty_layers, compensate, level, method, mode",
    ),
    (
        "key-without-its-group",
        ["--calibration.window=64"],
        "config key 'calibration.window' (given as "
        "'--calibration.window=64') is not known (did you mean 'model.calibration.window'?); allowed: at the top level",
    ),
    (
        "unknown-key-in-file",
        ["--config={unknown_yaml}"],
        "config key 'model.nope' (in a config file) is not known",
    ),
    (
        "yaml-malformed",
        ["--config={bad_yaml}"],
        "config file '{bad_yaml}' is not valid YAML (line 3, column 1: expected ',' or ']'",
    ),
    ("yaml-not-a-mapping", ["--config={list_yaml}"], "config file '{list_yaml}' holds a list, not a mapping"),
    ("config-missing", ["--config={a_file}.yaml"], "config file '{a_file}.yaml' does not exist"),
    (
        "output-dir-through-a-file",
        ["--record.output_dir={a_file}/run"],
        "output directory '{a_file}/run' cannot be written ('{a_file}' is not a writable folder)",
    ),
    (
        "wandb-errors",
        ["--record.wandb_errors=maybe"],
        "record.wandb_errors 'maybe' is invalid; allowed: continue",
    ),
    (
        "head-override-layer",
        [
            "--model.agency.enabled=true",
            "--model.agency.head_overrides=[{{layer: 999, head: 0, state: withdrawn}}]",
        ],
        "model.agency.head_overrides[0].layer 999 is outside the model; allowed: 0 to 1 (model '{model}' has "
        "2 layers x 4 heads)",
    ),
    (
        "head-override-head",
        ["--model.agency.enabled=true", "--model.agency.head_overrides=[{{layer: 1, head: 4}}]"],
        "model.agency.head_overrides[0].head 4 is outside the model; allowed: 0 to 3",
    ),
    (
        "head-override-state",
        [
            "--model.agency.enabled=true",
            "--model.agency.head_overrides=[{{layer: 0, head: 0, state: asleep}}]",
        ],
        "model.agency.head_overrides[0].state 'asleep' is not known; allowed: active,",
    ),
]


def _fill(text: str, bad_files: dict[str, Path], model: Path) -> str:
    return text.format(model=model, **bad_files)


@pytest.mark.parametrize(
    ("flags", "expected"), [case[1:] for case in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS]
)
def test_bad_input_is_one_line_before_any_model_loads(
    flags, expected, base_args, bad_files, tiny_gpt2_dir, tmp_path, capsys, monkeypatch, no_model_loads
) -> None:
    import torch

    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer on a GPU machine
    args = base_args
    for flag in flags:
        args = _replace(args, _fill(flag, bad_files, tiny_gpt2_dir))
    with pytest.raises(SystemExit) as info:
        cli.main(["predict", *args])
    assert info.value.code == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    assert _fill(expected, bad_files, tiny_gpt2_dir) in lines[0]
    assert "; allowed: " in lines[0]
    assert not (tmp_path / "run").exists()  # nothing written, not even the run folder


def test_allow_empty_layers_lets_level_100_through_the_checks(base_args) -> None:
    from lightning_modules.lightning_cli import check_args

    checked = check_args([*base_args, "--model.pruning.level=100", "--model.pruning.allow_empty_layers=true"])
    assert checked.module.pruning.level == 100 and checked.header.condition_id


def test_unknown_command_is_one_line(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["predcit"])
    assert info.value.code == 2
    assert (
        capsys.readouterr().err
        == "error: command 'predcit' is not known; allowed: predict, fit, recover, sweep, report, dashboard, demo\n"
    )


def test_help_and_print_config(base_args, capsys, monkeypatch) -> None:
    import yaml

    monkeypatch.setenv("WANDB_MODE", "disabled")
    with pytest.raises(SystemExit) as info:
        cli.main(["predict", "--config", "configs/default.yaml", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--model.pruning.level" in out and "--record.wandb_errors" in out
    with pytest.raises(SystemExit) as info:
        cli.main(["predict", *base_args, "--model.pruning.level=50", "--print_config"])
    assert info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["pruning"]["level"] == 50
    assert (
        printed["model"]["generation"]["num_tokens"] == 50 and printed["record"]["wandb_errors"] == "continue"
    )
    assert printed["timing"]["repeats"] == 2 and printed["model"]["agency"]["overload_mode"] == "relative"


def test_long_prompt_is_truncated_from_the_left_with_a_warning(tiny_gpt2_dir, tmp_path, monkeypatch) -> None:
    """The tiny context is 128: a 150-word prompt with 8 new tokens loses its first 30 tokens, and says so."""
    import json

    from transformers import AutoTokenizer

    monkeypatch.setenv("WANDB_MODE", "disabled")
    words = sorted(
        w for w in AutoTokenizer.from_pretrained(tiny_gpt2_dir).get_vocab() if not w.startswith("<")
    )
    long_prompt = " ".join((words * 10)[:150])  # word-level tokenizer: one token per word
    prompts = tmp_path / "long.txt"
    prompts.write_text(f"{long_prompt}\nthe cat sat on\n", encoding="utf-8")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli.main(
            [
                "predict",
                "--config",
                "configs/default.yaml",
                f"--model.model_name={tiny_gpt2_dir}",
                f"--data.prompt_file={prompts}",
                "--data.iterations=1",
                "--model.generation.num_tokens=8",
                *TINY_FLAGS,
                f"--record.output_dir={tmp_path / 'run'}",
            ]
        )
    truncations = [str(w.message) for w in caught if "truncated" in str(w.message)]
    # the timing warm-up generates 4 tokens (150 - 124 = 26 dropped), the condition 8 (150 - 120 = 30)
    assert any(
        "26 tokens dropped from its start to fit the context of 128 with 4 new tokens" in t
        for t in truncations
    )
    assert any(
        "30 tokens dropped from its start to fit the context of 128 with 8 new tokens" in t
        for t in truncations
    )
    (record_file,) = (tmp_path / "run" / "records").glob("*.json")
    samples = json.loads(record_file.read_text())["samples"]
    assert [s["prompt_tokens_dropped"] for s in samples] == [30, 0]
    assert all(not s["failures"] for s in samples)


# -- the real program, as a user runs it -------------------------------------------------------------------
SUBPROCESS_CASES = ["level-text", "model-missing", "yaml-malformed", "output-dir-through-a-file"]


@pytest.mark.slow  # one real CLI process per case
def test_real_cli_refuses_bad_input_with_one_line_and_help_works(
    tiny_gpt2_dir, tiny_prompt_file, bad_files, tmp_path
) -> None:
    """Each case in its own process (all at once, with ``--help`` beside them): exit code 2, stderr exactly
    one ``error:`` line, no run folder, no weights loaded; ``--help`` exits 0 with the config keys."""
    cases = {c[0]: c for c in BAD_INPUTS if c[0] in SUBPROCESS_CASES}
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "HF_HUB_OFFLINE": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
    }

    def start(args: list[str]) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "cli.py", "predict", *args],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    running = {}
    for name, flags, _ in cases.values():
        args = [
            "--config",
            "configs/default.yaml",
            f"--model.model_name={tiny_gpt2_dir}",
            f"--data.prompt_file={tiny_prompt_file}",
            *TINY_FLAGS,
            f"--record.output_dir={tmp_path / name}",
        ]
        for flag in flags:
            args = _replace(args, _fill(flag, bad_files, tiny_gpt2_dir))
        running[name] = start(args)
    helping = start(["--config", "configs/default.yaml", "--help"])
    for name, process in running.items():
        out, err = process.communicate(timeout=180)
        expected = _fill(cases[name][2], bad_files, tiny_gpt2_dir)
        assert process.returncode == 2, (name, err)
        assert err.count("\n") == 1 and err.startswith("error: ") and expected in err, (name, err)
        assert "Loading weights" not in out + err and not (tmp_path / name).exists(), name
    out, err = helping.communicate(timeout=180)
    assert helping.returncode == 0 and "--model.pruning.level" in out and err == "", err


def test_interrupted_predict_exits_130_with_an_incomplete_record(
    base_args, tmp_path, capsys, monkeypatch
) -> None:
    """Ctrl-C in the middle of one condition: a one-line notice, exit code 130, the record says incomplete."""
    import json
    import signal

    import lightning as L

    from lightning_modules import lightning_cli

    class SignalAfterFirstBatch(L.Callback):
        def on_predict_batch_end(
            self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
        ) -> None:
            os.kill(os.getpid(), signal.SIGINT)

    handler_before = signal.getsignal(signal.SIGINT)
    real_run_predict = lightning_cli.run_predict
    monkeypatch.setattr(
        lightning_cli, "run_predict", lambda argv: real_run_predict(argv, callbacks=[SignalAfterFirstBatch()])
    )
    monkeypatch.setenv("WANDB_MODE", "disabled")
    with pytest.raises(SystemExit) as info:
        cli.main(["predict", *base_args, "--data.batch_size=1", "--data.iterations=1", "--record.quiet=true"])
    assert info.value.code == 130
    assert signal.getsignal(signal.SIGINT) == handler_before  # nohup: SIG_IGN stays SIG_IGN
    assert "interrupted by SIGINT: the condition did not finish" in capsys.readouterr().err
    (record_file,) = (tmp_path / "run" / "records").glob("*.json")
    record = json.loads(record_file.read_text())
    assert record["status"] == "incomplete" and len(record["samples"]) == 1


def test_two_predicts_that_differ_in_an_agency_key_write_two_records(
    base_args, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    common = [
        *base_args,
        "--data.iterations=1",
        "--model.generation.num_tokens=4",
        "--record.quiet=true",
        "--model.pruning.level=25",
        "--model.agency.enabled=true",
    ]
    cli.main(["predict", *common, "--model.agency.overload_margin=0.05"])
    cli.main(["predict", *common, "--model.agency.overload_margin=0.1"])
    assert len(list((tmp_path / "run" / "records").glob("*.json"))) == 2


def test_bundled_configs_work_from_any_directory(
    tiny_gpt2_dir, tiny_prompt_file, tmp_path, monkeypatch
) -> None:
    """An installed command finds configs/default.yaml by name, wherever it runs."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.chdir(tmp_path)
    cli.main(
        [
            "predict",
            "--config",
            "configs/default.yaml",
            f"--model.model_name={tiny_gpt2_dir}",
            f"--data.prompt_file={tiny_prompt_file}",
            "--data.max_prompts=2",
            *TINY_FLAGS,
            "--model.generation.num_tokens=4",
            "--record.quiet=true",
            "--record.output_dir=here",
        ]
    )
    assert len(list((tmp_path / "here" / "records").glob("*.json"))) == 1


@pytest.mark.parametrize("given_as", ["flag=", "flag space", "config file", "flag over config file"])
def test_recover_checks_the_run_folder_given_in_any_form(
    given_as, base_args, bad_files, tmp_path, capsys, monkeypatch, no_model_loads
) -> None:
    """``--record.output_dir DIR`` and ``=DIR`` are the same; a config file's folder beats the default and a
    flag beats the config file. The folder is one the checks refuse, so the test needs no model load."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.chdir(tmp_path)
    bad, good = f"{bad_files['a_file']}/run", str(tmp_path / "good")
    args = [a for a in base_args if not a.startswith("--record.output_dir")]
    config = tmp_path / "record.yaml"
    config.write_text(f"record:\n  output_dir: {bad if given_as == 'config file' else good}\n")
    extra = {
        "flag=": [f"--record.output_dir={bad}"],
        "flag space": ["--record.output_dir", bad],
        "config file": ["--config", str(config)],
        "flag over config file": ["--config", str(config), "--record.output_dir", bad],
    }[given_as]
    with pytest.raises(SystemExit) as info:
        cli.main(["recover", *args, *extra])
    lines = capsys.readouterr().err.splitlines()
    assert info.value.code == 2 and len(lines) == 1, lines
    assert f"output directory '{bad}' cannot be written" in lines[0]


@pytest.mark.parametrize("checkpoint", ["missing.ckpt", "not_a_checkpoint.ckpt"])
def test_a_refused_checkpoint_is_refused_before_any_wandb_run_starts(
    checkpoint, base_args, tmp_path, capsys, monkeypatch, no_model_loads
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    path = tmp_path / checkpoint
    if checkpoint.startswith("not_a"):
        path.write_text("plain text, not a checkpoint\n")
    with pytest.raises(SystemExit) as info:
        cli.main(["predict", *base_args, f"--model.checkpoint={path}"])
    lines = capsys.readouterr().err.splitlines()
    assert info.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: model.checkpoint '{path}' ") and "; allowed: " in lines[0]
    assert not list(tmp_path.rglob("offline-run-*"))  # no W&B run was started for it


LATE_SIGNAL_SCRIPT = """
import atexit, os, signal, sys
import cli

def signal_after_every_exit_hook():  # registered before the command, so it runs after every hook it brings
    os.kill(os.getpid(), signal.SIGINT)
    print("after the exit hooks", flush=True)

atexit.register(signal_after_every_exit_hook)
cli.run_as_process(["--help"])
for _ in range(int(sys.argv[1])):
    os.kill(os.getpid(), getattr(signal, sys.argv[2]))
print("after the command", flush=True)
"""


def _signal_a_finished_command(count: int, sig: str) -> subprocess.CompletedProcess:
    """``cli.run_as_process`` runs a command, which returns; then ``count`` signals, and one after every exit hook."""
    return subprocess.run(
        [sys.executable, "-c", LATE_SIGNAL_SCRIPT, str(count), sig],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_after_the_commands_work_leaves_its_exit_status(sig: str) -> None:
    """Ctrl-C just as a finished sweep shuts down: exit 0 with no traceback, not a death by signal (-2)."""
    done = _signal_a_finished_command(1, sig)
    assert done.returncode == 0, done.stderr
    assert "after the command" in done.stdout and "after the exit hooks" in done.stdout
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr


def test_a_second_signal_after_the_commands_work_exits_at_once() -> None:
    """An exit hook that hangs can still be left: the second Ctrl-C exits with 130."""
    done = _signal_a_finished_command(2, "SIGINT")
    assert done.returncode == 130, done.stderr
    assert "after the command" not in done.stdout and "Traceback" not in done.stderr


def _refuse_in_setup(where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``ConfigError`` raised once the condition runs: in the module's ``setup`` or in a callback's."""
    from callbacks.quality import QualityMonitor
    from lightning_modules.module import PruningExperiment
    from record.errors import ConfigError

    def refused(self, *args, **kwargs) -> None:
        raise ConfigError("model.example", 7, "a value this setup accepts", "is refused in setup")

    target = PruningExperiment if where == "module" else QualityMonitor
    monkeypatch.setattr(target, "setup", refused)


@pytest.mark.parametrize("where", ["module", "callback"])
def test_a_config_error_in_setup_is_one_line_and_leaves_no_run_or_record(
    where, base_args, tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    _refuse_in_setup(where, monkeypatch)
    with pytest.raises(SystemExit) as info:
        cli.main(["predict", *base_args])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith(("warning: ", "wandb: "))]
    assert info.value.code == 2 and "Traceback" not in err, err
    assert lines == ["error: model.example 7 is refused in setup; allowed: a value this setup accepts"]
    run = tmp_path / "run"
    assert not list(run.rglob("offline-run-*")) and not (run / "wandb").exists()  # the W&B run is gone
    assert not list(run.rglob("*.json"))  # no record for a condition that never ran


def test_a_config_error_in_a_sweep_conditions_setup_ends_the_sweep_with_exit_2(
    tiny_gpt2_dir, tiny_prompt_file, tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    _refuse_in_setup("module", monkeypatch)
    sweep = tmp_path / "sweep.yaml"
    flags = [f"--model.model_name={tiny_gpt2_dir}", f"--data.prompt_file={tiny_prompt_file}", *TINY_FLAGS]
    command = [
        "${env}",
        "${interpreter}",
        "${program}",
        "predict",
        "--config",
        "configs/default.yaml",
        *flags,
    ]
    command += ["--timing.sessions=1", "--data.max_prompts=2", "${args}"]
    sweep.write_text(
        "program: cli.py\nmethod: grid\ncommand:\n"
        + "".join(f"  - '{part}'\n" for part in command)
        + "parameters:\n  model.pruning.level:\n    values: [0]\n"
    )
    with pytest.raises(SystemExit) as info:
        cli.main(["sweep", str(sweep), "--output_dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert info.value.code == 2 and "Traceback" not in err, err
    assert errors == ["error: model.example 7 is refused in setup; allowed: a value this setup accepts"]
    assert not list((tmp_path / "run").rglob("offline-run-*"))
    assert not list((tmp_path / "run" / "records").glob("*.json"))


def test_a_config_error_in_the_report_is_one_line(tmp_path, capsys, monkeypatch) -> None:
    from record.errors import ConfigError
    from reporting import report

    def refused(*args, **kwargs):
        raise ConfigError("--example", "x", "a value the report accepts")

    (tmp_path / "records").mkdir()
    monkeypatch.setattr(report, "write_report", refused)
    with pytest.raises(SystemExit) as info:
        cli.main(["report", str(tmp_path), "--no-wandb"])
    err = capsys.readouterr().err
    assert (
        info.value.code == 2
        and err == "error: --example 'x' is invalid; allowed: a value the report accepts\n"
    )


# Keys that take any text: a wrong type cannot be told from a value (a folder name, a W&B group).
FREE_TEXT = {"record.output_dir"}


def _wrong_value(default: str) -> str:
    """A value of the wrong kind for a key whose default (as docs/settings.md shows it) is ``default``."""
    if default in ("`true`", "`false`"):
        return "maybe"
    if default.startswith("`["):
        return "7"
    return "not-a-valid-value"


@pytest.fixture(scope="module")
def every_key() -> list[tuple[str, str]]:
    from lightning_modules.settings_reference import settings_rows

    os.environ.setdefault("WANDB_MODE", "disabled")
    return [(key, f"`{default}`") for key, default, _ in settings_rows() if key not in FREE_TEXT]


def test_every_setting_refuses_a_value_of_the_wrong_kind_in_one_line_before_any_load(
    every_key, base_args, tmp_path, capsys, monkeypatch, no_model_loads
) -> None:
    """Every key of ours, those added later included (the list is the parser's own), refuses a wrong value as
    bad input: one line naming the key or the value, exit 2, nothing loaded or written."""
    import torch

    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    accepted = []
    for key, default in every_key:
        value = _wrong_value(default)
        try:
            cli.main(["predict", *_replace(base_args, f"--{key}={value}")])
        except SystemExit as exit_:
            code = exit_.code
        except AssertionError:  # no_model_loads: it went on to load a model, so the value was taken
            code = None
        else:
            code = 0
        if code in (None, 0):
            accepted.append(f"{key}={value}")
            capsys.readouterr()
            continue
        err = capsys.readouterr().err
        lines = err.splitlines()
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, (key, err)
        assert lines[0].startswith("error: ") and (key in lines[0] or value in lines[0]), (key, lines[0])
    assert accepted == [], f"taken as valid: {accepted}"
    assert not (tmp_path / "run").exists()
