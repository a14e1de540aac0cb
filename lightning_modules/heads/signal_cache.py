"""Calibration signals kept on disk, keyed by what they are computed from.

A gradient pass, the attention statistics or a set of ablations over the
calibration text cost seconds to minutes, and a W&B agent's one-condition
process, a resumed sweep or a re-run would otherwise compute them again. A
signal's key is the content it depends on: a digest of the weights actually
used, the calibration windows (token ids) and text, and the settings that shape
it (window, precision, device type, the signal's name and parameters, library
versions). A changed weight or text therefore misses; nothing is looked up by a
model's name. Files are written atomically and read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightning_modules.models.sources import cache_dir

SIGNALS_FOLDER = "signals"
SIGNALS_VARIABLE = "PRUNING_AGENCY_SIGNALS"  # moves the signals alone (the converted models stay put)


def weights_digest(model: nn.Module) -> str:
    """sha256 over every state-dict tensor (name, dtype, shape, bytes); a tensor shared by two names once."""
    digest = hashlib.sha256()
    seen: dict[tuple, str] = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach()
        where = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if where in seen:  # tied weights: name the first holder instead of hashing the bytes again
            digest.update(f"same as {seen[where]}".encode())
            continue
        seen[where] = name
        data = tensor.cpu().contiguous().reshape(-1).view(torch.uint8)
        digest.update(memoryview(data.numpy()))
    return digest.hexdigest()


def key_text(key: dict[str, Any]) -> str:
    """The canonical text of a key: sorted, JSON; what the file name hashes and the file repeats."""
    return json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)


class SignalCache:
    """Signals (dicts of tensors) on disk under ``root`` (default: ``PRUNING_AGENCY_SIGNALS`` if set, else
    ``PRUNING_AGENCY_CACHE``/signals, else ~/.cache/pruning-agency/signals)."""

    def __init__(self, root: Path | str | None = None) -> None:
        self._root = Path(root) if root is not None else None

    @property
    def root(self) -> Path:
        """Read when used, so a changed environment applies to a cache made earlier."""
        if self._root is not None:
            return self._root
        return Path(os.environ.get(SIGNALS_VARIABLE) or cache_dir() / SIGNALS_FOLDER)

    def path(self, key: dict[str, Any]) -> Path:
        text = key_text(key)
        return (
            self.root / f"{key.get('signal', 'signal')}-{hashlib.sha256(text.encode()).hexdigest()[:32]}.pt"
        )

    def load(self, key: dict[str, Any]) -> dict[str, torch.Tensor] | None:
        """The stored value for ``key``, or None when absent, unreadable or stored under another key."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - a truncated or foreign file is recomputed, not trusted
            warnings.warn(f"calibration signal cache {path} unreadable ({error}); recomputing", stacklevel=2)
            return None
        if not isinstance(stored, dict) or stored.get("key") != key_text(key):
            return None
        return stored["value"]

    def save(self, key: dict[str, Any], value: dict[str, torch.Tensor]) -> None:
        """Write atomically (temp file + ``os.replace``): a reader never sees half a file. A folder that
        cannot be written costs only the saving (a warning): the signal itself is already computed."""
        path = self.path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        except OSError as error:
            warnings.warn(f"calibration signal not cached: {path.parent} ({error})", stacklevel=2)
            return
        try:
            with os.fdopen(handle, "wb") as file:
                torch.save({"key": key_text(key), "value": value}, file)
            os.chmod(temporary, 0o644)  # mkstemp makes it private; the cache is read like any cached file
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
