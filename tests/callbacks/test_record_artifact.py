"""The record as a W&B artifact: a deterministic name, and a failure that never touches the local record."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from callbacks.record_writer import RecordWriter, artifact_name
from record.storage import read_record, write_record

NAME_ALLOWED = re.compile(r"[A-Za-z0-9._-]+")


def test_a_condition_id_is_its_own_artifact_name_when_it_is_allowed() -> None:
    cid = "gpt2_entropy_L50_agency_T0.7_s0_0123456789"
    assert artifact_name(cid) == cid


@pytest.mark.parametrize("cid", ["my model/x_entropy_L5_baseline_s0_ab", "a:b", "ü_model_L0"])
def test_other_characters_are_replaced_deterministically_and_never_collide(cid: str) -> None:
    name = artifact_name(cid)
    assert NAME_ALLOWED.fullmatch(name) and name == artifact_name(cid)
    # two ids that differ only in a replaced character keep apart
    assert artifact_name(cid) != artifact_name(cid.replace(cid[-1], "-") + "-")


def _synthetic():
    """The reporting tests' record builder (``tests/reporting/synthetic.py``; its name is taken by a package)."""
    import importlib.util

    if "synthetic" in sys.modules:
        return sys.modules["synthetic"]
    spec = importlib.util.spec_from_file_location(
        "synthetic", Path(__file__).parents[1] / "reporting" / "synthetic.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["synthetic"] = module
    spec.loader.exec_module(module)
    return module


class _FailingRun:
    def log_artifact(self, artifact) -> None:
        raise ConnectionError("artifact storage is not reachable")


def test_a_failing_artifact_log_leaves_the_local_record_as_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    record = _synthetic().make_record()
    path = write_record(tmp_path / "records" / f"{record.condition_id}.json", record)
    before = path.read_bytes()
    writer = RecordWriter(output_dir=str(tmp_path))
    writer.written = path
    writer._log_record_artifact(SimpleNamespace(experiment=_FailingRun()), record)
    assert path.read_bytes() == before and read_record(path).condition_id == record.condition_id
    err = capsys.readouterr().err
    assert "the record artifact could not be logged to W&B (ConnectionError: artifact storage" in err
    assert str(path) in err

    writer.wandb_errors = "raise"
    with pytest.raises(ConnectionError):
        writer._log_record_artifact(SimpleNamespace(experiment=_FailingRun()), record)
    assert path.read_bytes() == before
