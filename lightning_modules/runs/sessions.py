"""The timing sessions of a local sweep: which cell times a speed A/A, and each cell's sessions kept on disk.

A cell's sessions are written the moment each is measured
(``<run folder>/timings/<cell key>.json``), so an interrupted sweep loses no
session and ``--resume`` times only the sessions still missing. A file that
cannot be read, or that holds other arms, is set aside with a warning and its
cell is timed again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from callbacks.speed import Session
from record.errors import RecordError
from record.identity import AGENCY_ENABLED_KEY, LEVEL_KEY, flatten
from record.schema import timing_from_json
from record.storage import write_json_atomic


def is_baseline(config: dict[str, Any]) -> bool:
    return not flatten(config).get(AGENCY_ENABLED_KEY, False)


def speed_aa_cell(cells: Sequence[Sequence[Any]]) -> int | None:
    """The index of the cell whose baseline is also timed as a pseudo-arm: the first with a baseline and another
    arm at a pruned level (where the arms' speeds can differ), else the first with a baseline; None without one.

    ``cells``: each cell's conditions, anything with ``header.config``."""
    with_baseline = [i for i, cell in enumerate(cells) if any(is_baseline(p.header.config) for p in cell)]
    for i in with_baseline:
        level = flatten(cells[i][0].header.config).get(LEVEL_KEY) or 0
        if len(cells[i]) > 1 and level > 0:
            return i
    return with_baseline[0] if with_baseline else None


def cell_key(arm_ids: Sequence[str]) -> str:
    """A short stable name for the set of arms timed together (file names stay short whatever the ids)."""
    return hashlib.sha256("\n".join(sorted(arm_ids)).encode()).hexdigest()[:16]


@dataclass
class SessionStore:
    """Every cell's measured sessions under ``folder`` (one JSON file per cell), loaded and saved whole."""

    folder: Path

    def path(self, arm_ids: Sequence[str]) -> Path:
        return self.folder / f"{cell_key(arm_ids)}.json"

    def load(self, arm_ids: Sequence[str]) -> tuple[list[Session], str | None]:
        """The sessions measured so far for these arms, and a warning when a file was there but is not usable."""
        path = self.path(arm_ids)
        if not path.exists():
            return [], None
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
            if sorted(payload.get("arms", [])) != sorted(arm_ids):
                raise RecordError(f"it holds the sessions of other arms ({payload.get('arms')})")
            sessions = [
                {
                    arm: timing_from_json(timing, f"{path} session {k + 1} arm {arm}")
                    for arm, timing in session.items()
                }
                for k, session in enumerate(payload["sessions"])
            ]
            if any(set(session) != set(arm_ids) for session in sessions):
                raise RecordError("a session lacks an arm")
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecordError) as error:
            return [], f"timing sessions {path} cannot be used ({error}); that cell is timed again"
        return sessions, None

    def save(self, arm_ids: Sequence[str], sessions: Sequence[Session]) -> Path:
        payload = {
            "arms": list(arm_ids),
            "sessions": [{arm: dataclasses.asdict(t) for arm, t in s.items()} for s in sessions],
        }
        return write_json_atomic(self.path(arm_ids), payload)
