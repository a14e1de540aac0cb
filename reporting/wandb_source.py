"""Records from W&B: the ``condition-record`` artifacts of a sweep's (or a project's) runs, as a local run folder.

Each condition's W&B run carries its record file as an artifact (``callbacks/record_writer.py``). Here they are
downloaded, checked exactly as local files are (``record.storage.read_record``: checksum and schema), and
written into one run folder (``records/`` and, for a sweep, its ``sweep.yaml``), which ``report`` then reads
like any other. A re-run of a condition is taken once (same condition id and identity hash); a record that
fails its check is refused by name and never enters the folder.

W&B is reached only through :class:`RecordStore`, a few calls wide, so tests serve records from files. Nothing is
written until every download has succeeded: no network or no login is one :class:`WandbUnavailable`.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from record.errors import RecordError
from record.identity import identity_hash
from record.storage import DEFAULT_ROOT, read_record

RECORD_ARTIFACT_TYPE = "condition-record"  # the type callbacks/record_writer.py logs
API_TIMEOUT_S = 20


class WandbUnavailable(Exception):
    """W&B cannot be asked (no network, no login, no such project or sweep); the message says which."""


@dataclass(frozen=True)
class WandbTarget:
    """``ENTITY/PROJECT`` or ``ENTITY/PROJECT/SWEEP_ID``."""

    entity: str
    project: str
    sweep: str | None = None

    @classmethod
    def parse(cls, text: str) -> WandbTarget:
        parts = text.strip("/").split("/")
        if len(parts) not in (2, 3) or not all(re.fullmatch(r"[\w.-]+", p) for p in parts):
            raise ValueError(
                f"--wandb '{text}' is not a W&B path; allowed: ENTITY/PROJECT or ENTITY/PROJECT/SWEEP_ID"
            )
        return cls(*parts)

    @property
    def slug(self) -> str:
        return "_".join(p for p in (self.entity, self.project, self.sweep) if p)

    def __str__(self) -> str:
        return "/".join(p for p in (self.entity, self.project, self.sweep) if p)


@dataclass(frozen=True)
class RemoteRun:
    """What is needed of one W&B run before anything is downloaded."""

    id: str
    config: dict[str, Any]


@dataclass(frozen=True)
class RemoteRecord:
    """One downloaded record file and where it came from (for messages)."""

    path: Path
    origin: str  # e.g. "entity/project/artifact:v1 (run abc123)"


class RecordStore(Protocol):
    """The calls of W&B's public API that loading records needs."""

    def sweep_parameters(self, target: WandbTarget) -> dict[str, Any] | None:
        """The sweep's ``parameters`` (None for a whole project)."""

    def runs(self, target: WandbTarget) -> list[RemoteRun]:
        """The sweep's runs, or every run of the project."""

    def download_records(self, target: WandbTarget, run: RemoteRun, into: Path) -> list[RemoteRecord]:
        """Download the run's ``condition-record`` artifacts under ``into``."""


class PublicApiStore:
    """:class:`RecordStore` over ``wandb.Api``; every W&B or network error becomes :class:`WandbUnavailable`."""

    def __init__(self, timeout_s: int = API_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._api: Any = None

    def _call(self, what: str, call: Any) -> Any:
        try:
            import wandb

            if self._api is None:
                self._api = wandb.Api(timeout=self.timeout_s)
            return call(self._api)
        except Exception as error:  # noqa: BLE001 - wandb's, requests' and the GraphQL client's errors alike
            raise WandbUnavailable(f"W&B could not be asked for {what} ({_one_line(error)})") from None

    def sweep_parameters(self, target: WandbTarget) -> dict[str, Any] | None:
        if target.sweep is None:
            return None
        sweep = self._call(f"sweep {target}", lambda api: api.sweep(str(target)))
        return dict((sweep.config or {}).get("parameters") or {})

    def runs(self, target: WandbTarget) -> list[RemoteRun]:
        def fetch(api: Any) -> list[RemoteRun]:
            found = (
                api.sweep(str(target)).runs if target.sweep else api.runs(f"{target.entity}/{target.project}")
            )
            return [RemoteRun(str(run.id), dict(run.config)) for run in found]

        return sorted(self._call(f"the runs of {target}", fetch), key=lambda run: run.id)

    def download_records(self, target: WandbTarget, run: RemoteRun, into: Path) -> list[RemoteRecord]:
        """The condition records a W&B sweep's runs logged, as artifacts, through the public API."""

        def fetch(api: Any) -> list[RemoteRecord]:
            records = []
            remote = api.run(f"{target.entity}/{target.project}/{run.id}")
            for artifact in remote.logged_artifacts():
                if artifact.type != RECORD_ARTIFACT_TYPE:
                    continue
                root = Path(artifact.download(root=str(into / run.id / artifact.name.replace(":", "_"))))
                origin = f"{target.entity}/{target.project}/{artifact.name} (run {run.id})"
                records += [RemoteRecord(path, origin) for path in sorted(root.rglob("*.json"))]
            return records

        return self._call(f"the records of run {run.id}", fetch)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


@dataclass
class Downloaded:
    """The run folder the records went to, and every download that was refused or taken once."""

    run_dir: Path
    records: int = 0
    problems: list[str] = field(default_factory=list)
    repeats: int = 0


def matches(config: dict[str, Any], where: Sequence[tuple[str, Any]]) -> bool:
    """``--where`` on a run's (flat) W&B config, before its records are downloaded."""
    return all(key not in config or config[key] == value for key, value in where)


def mirror_dir(target: WandbTarget, root: Path = DEFAULT_ROOT) -> Path:
    """Where a target's records are kept locally: ``validation_results/pruning_agency/wandb_<entity>_<project>[_<sweep>]``."""
    return Path(root) / f"wandb_{target.slug}"


def _stage(
    target: WandbTarget, store: RecordStore, scratch: Path, where: Sequence[tuple[str, Any]]
) -> tuple[Path, Downloaded]:
    """Download and check one target's records into a run folder under ``scratch``."""
    parameters = store.sweep_parameters(target)
    runs = [run for run in store.runs(target) if matches(run.config, where)]
    downloaded = Downloaded(mirror_dir(target))
    staged = scratch / target.slug
    (staged / "records").mkdir(parents=True)
    kept: set[tuple[str, str]] = set()
    for run in runs:
        for remote in store.download_records(target, run, scratch / "downloads" / target.slug):
            _take(remote, staged / "records", kept, downloaded)
    if parameters is not None:
        (staged / "sweep.yaml").write_text(yaml.safe_dump({"parameters": parameters}), encoding="utf-8")
    downloaded.records = len(kept)
    return staged, downloaded


def _take(
    remote: RemoteRecord, records_dir: Path, kept: set[tuple[str, str]], downloaded: Downloaded
) -> None:
    try:
        record = read_record(remote.path)
    except RecordError as error:
        downloaded.problems.append(f"W&B artifact {remote.origin}: {error}; excluded")
        return
    key = (record.condition_id, identity_hash(record.config))
    if key in kept:  # a re-run of the same condition: one version is enough
        downloaded.repeats += 1
        return
    kept.add(key)
    shutil.copyfile(remote.path, records_dir / f"{record.condition_id}.json")


def _replace(staged: Path, run_dir: Path) -> None:
    """The new records in place of the old ones (a stale record from an earlier download never lingers)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in ("records", "sweep.yaml"):
        old = run_dir / name
        if old.is_dir():
            shutil.rmtree(old)
        elif old.exists():
            old.unlink()
        if (staged / name).exists():
            shutil.move(str(staged / name), str(old))


def download_all(
    targets: Iterable[WandbTarget],
    store: RecordStore,
    root: Path = DEFAULT_ROOT,
    where: Sequence[tuple[str, Any]] = (),
) -> list[Downloaded]:
    """Every target's records, each in its own run folder under ``root``; nothing is written unless every
    target could be read."""
    with tempfile.TemporaryDirectory(prefix="wandb-records-") as scratch:
        staged = [_stage(target, store, Path(scratch), where) for target in targets]
        results = []
        for folder, downloaded in staged:
            downloaded.run_dir = Path(root) / downloaded.run_dir.name
            _replace(folder, downloaded.run_dir)
            results.append(downloaded)
    return results
