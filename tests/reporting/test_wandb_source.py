"""``report --wandb``: records downloaded from W&B are checked and reported exactly as local ones."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from synthetic import Grid, write_run

from reporting.cli import report_main
from reporting.wandb_source import RemoteRecord, RemoteRun, WandbTarget, WandbUnavailable

GRID = Grid(levels=(0.0, 30.0), temperatures=(0.7,), prompts=6, repeats=3, layers=4, heads=6)


class FolderStore:
    """A W&B stand-in: each record file of a run folder is one run's ``condition-record`` artifact; a record can
    be served twice (a re-run) or replaced by other bytes (a damaged download)."""

    def __init__(self, run_dir: Path, repeat: int = 0, damaged: dict[str, bytes] | None = None) -> None:
        self.run_dir, self.repeat, self.damaged = run_dir, repeat, damaged or {}
        self.files = sorted((run_dir / "records").glob("*.json"))

    def sweep_parameters(self, target: WandbTarget) -> dict[str, Any] | None:
        if target.sweep is None:
            return None
        return yaml.safe_load((self.run_dir / "sweep.yaml").read_text())["parameters"]

    def runs(self, target: WandbTarget) -> list[RemoteRun]:
        served = [*self.files, *self.files[: self.repeat]]
        runs = []
        for index, path in enumerate(served):
            config = json.loads(path.read_text())["config"]
            runs.append(
                RemoteRun(f"run{index:03d}", {"model.pruning.level": config["model"]["pruning"]["level"]})
            )
        return runs

    def download_records(self, target: WandbTarget, run: RemoteRun, into: Path) -> list[RemoteRecord]:
        source = [*self.files, *self.files[: self.repeat]][int(run.id[3:])]
        into = into / run.id
        into.mkdir(parents=True)
        copy = into / source.name
        copy.write_bytes(self.damaged.get(source.name, source.read_bytes()))
        return [RemoteRecord(copy, f"{target}/{source.stem}:v0 (run {run.id})")]


class UnreachableStore(FolderStore):
    """What the public API does on a machine without network or login: the first call fails."""

    def __init__(self) -> None:
        pass

    def sweep_parameters(self, target: WandbTarget) -> dict[str, Any] | None:
        raise WandbUnavailable(f"W&B could not be asked for sweep {target} (No API key configured)")

    runs = sweep_parameters  # type: ignore[assignment]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("local") / "run"
    write_run(run, GRID)
    return run


def _report_local(run: Path, out: Path) -> bytes:
    report_main([str(run), "--out", str(out), "--no-plots", "--no-wandb", "--quiet"])
    return (out / "statistics.json").read_bytes()


def test_records_from_wandb_give_the_local_statistics_byte_for_byte(local_run: Path, tmp_path: Path) -> None:
    local = _report_local(local_run, tmp_path / "local-report")
    store = FolderStore(local_run, repeat=2)  # two conditions ran twice: each is taken once
    report_main(
        ["--wandb", "me/proj/sw1", "--wandb-dir", str(tmp_path / "w"), "--out", str(tmp_path / "wr")]
        + ["--no-plots", "--no-wandb", "--quiet"],
        store=store,
    )
    mirror = tmp_path / "w" / "wandb_me_proj_sw1"
    remote = (tmp_path / "wr" / "statistics.json").read_bytes()
    # the same bytes, but for where the records were read from
    assert remote == local.replace(str(local_run).encode(), str(mirror).encode())
    assert len(list((mirror / "records").glob("*.json"))) == len(store.files)


def test_a_damaged_download_is_refused_by_name_and_the_rest_reported(
    local_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = FolderStore(local_run).files[:2]
    edited = json.loads(second.read_text())
    edited["samples"][0]["metrics"]["reference_perplexity"] = 1.0  # a number changed after it was written
    damaged = {first.name: first.read_bytes()[:200], second.name: json.dumps(edited).encode()}
    report_main(
        ["--wandb", "me/proj/sw1", "--wandb-dir", str(tmp_path / "w"), "--out", str(tmp_path / "wr")]
        + ["--no-plots", "--no-wandb", "--quiet"],
        store=FolderStore(local_run, damaged=damaged),
    )
    err = capsys.readouterr().err
    statistics = json.loads((tmp_path / "wr" / "statistics.json").read_text())
    for path, why in ((first, "cannot be read"), (second, "does not match its checksum")):
        assert f"W&B artifact me/proj/sw1/{path.stem}:v0" in err and why in err
        assert path.stem not in statistics["inputs"]["records"]
        assert any(path.stem in problem and why in problem for problem in statistics["inputs"]["problems"])
    assert not (tmp_path / "w" / "wandb_me_proj_sw1" / "records" / first.name).exists()
    assert statistics["inputs"]["n_records"] == len(FolderStore(local_run).files) - 2


def test_where_filters_a_projects_runs_before_download(local_run: Path, tmp_path: Path) -> None:
    report_main(
        ["--wandb", "me/proj", "--wandb-dir", str(tmp_path / "w"), "--where", "model.pruning.level=30"]
        + ["--split-by", "model.agency.enabled", "--no-plots", "--no-wandb", "--quiet"],
        store=FolderStore(local_run),
    )
    records = list((tmp_path / "w" / "wandb_me_proj" / "records").glob("*.json"))
    assert records and all(
        json.loads(p.read_text())["config"]["model"]["pruning"]["level"] == 30 for p in records
    )


@pytest.mark.parametrize("store", [None, UnreachableStore()], ids=["public-api", "stand-in"])
def test_no_network_or_login_is_one_line_exit_2_and_nothing_written(
    store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real ``wandb.Api`` on this machine (no key, no network) fails fast; so does the stand-in."""
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    with pytest.raises(SystemExit) as info:
        report_main(["--wandb", "me/proj/sw1"], store=store)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: W&B could not be asked for "), err
    assert list((tmp_path / "cwd").iterdir()) == []


def test_a_bad_wandb_path_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        report_main(["--wandb", "only-a-project"])
    assert info.value.code == 2
    assert "allowed: ENTITY/PROJECT or ENTITY/PROJECT/SWEEP_ID" in capsys.readouterr().err


@pytest.mark.slow  # a real offline W&B run, with figures
def test_the_report_run_carries_the_report_folder_as_an_artifact(
    local_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    run = tmp_path / "run"
    shutil.copytree(local_run, run)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    report_main([str(run), "--quiet"])
    (offline,) = (run / "wandb").glob("offline-run-*")
    wandb_cli = Path(sys.executable).with_name("wandb")
    out = subprocess.run(
        [str(wandb_cli), "leet", "inspect", "--json", str(offline)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={**os.environ},
    ).stdout
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    (artifact,) = [
        e["artifact"] for e in events if e["type"] == "artifact" and e["artifact"]["type"] == "report"
    ]
    files = {entry["path"]: Path(entry["local_path"]) for entry in artifact["manifest"]["contents"]}
    assert files["summary.md"].read_bytes() == (run / "report" / "summary.md").read_bytes()
    assert files["statistics.json"].read_bytes() == (run / "report" / "statistics.json").read_bytes()
    plots = sorted(p.relative_to(run / "report").as_posix() for p in (run / "report" / "plots").glob("*.png"))
    assert plots and sorted(k for k in files if k.startswith("plots/")) == plots
