"""Prompts for generation and the bundled texts: where they are, how they are read, how they are batched.

Three texts ship with the package (see ``assets/README.md``): the prompts, a
calibration text (*Macbeth*: rankings, agency calibration, recovery training)
and an evaluation text (*Hamlet*: corpus perplexity only). They are disjoint,
so nothing is ever calibrated on the text it is evaluated on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from record.errors import NO_VALUE, ConfigError, is_int, require
from record.identity import file_fingerprint, init_arguments

ASSETS = Path(__file__).parent / "assets"
BUNDLED_PROMPTS = ASSETS / "prompts.txt"
BUNDLED_EVAL_TEXT = ASSETS / "eval_text.txt"
BUNDLED_CALIBRATION_TEXT = ASSETS / "calibration_text.txt"


def read_text_file(path: str | Path, what: str, key: str | None = None) -> str:
    """Read a UTF-8 text file, refusing missing, empty, binary or non-UTF-8 files by name."""
    path = Path(path)
    allowed = "a UTF-8 text file"

    def refuse(problem: str) -> ConfigError:
        return ConfigError(key, NO_VALUE, allowed, problem, what=f"{what} '{path}'")

    if not path.is_file():
        raise refuse("does not exist or is not a file")
    raw = path.read_bytes()
    if b"\x00" in raw:
        raise refuse("is binary (contains NUL bytes)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise refuse(f"is not UTF-8 text (byte {error.start})") from None
    if not text.strip():
        raise refuse("is empty")
    return text


def sequence_start(tokenizer: Any) -> list[int]:
    """The tokens this tokenizer puts before any text (Gemma's and Llama's ``<bos>``; none for GPT-2 or SmolLM2).

    A model trained with them sees them at the start of every sequence, so each window of a long text is scored
    and read with them in front (Gemma 3 without its ``<bos>``: perplexity x10), like a prompt."""
    plain = tokenizer("a", add_special_tokens=False).input_ids
    full = tokenizer("a").input_ids
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start])
    return []


def text_ids(tokenizer: Any, text: str) -> torch.Tensor:
    """A long text's token ids without special tokens (windows add ``sequence_start`` each)."""
    return tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids[0]


def read_prompts(path: str | Path | None, max_prompts: int | None) -> list[str]:
    """One prompt per non-empty line; the first ``max_prompts`` of them."""
    text = read_text_file(path or BUNDLED_PROMPTS, "prompt file", "data.prompt_file")
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    return prompts[:max_prompts] if max_prompts else prompts


@dataclass
class PromptItem:
    prompt_index: int
    iteration: int
    prompt: str


class PromptDataset(Dataset):
    """Every prompt repeated ``iterations`` times; iterations of one prompt differ only by seed."""

    def __init__(self, prompts: list[str], iterations: int) -> None:
        self.items = [PromptItem(i, it, p) for it in range(iterations) for i, p in enumerate(prompts)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> PromptItem:
        return self.items[index]


def collate_items(items: list[PromptItem]) -> list[PromptItem]:
    """Keep items as they are: the module tokenizes with its own tokenizer and left padding."""
    return items


class PromptDataModule(L.LightningDataModule):
    """Prompts x iterations, batched; tokenization happens in the module, which owns the tokenizer. For ``fit``
    (recovery) the module provides the calibration-text windows.

    Args:
        prompt_file: one prompt per line, UTF-8; the bundled prompts when null.
        max_prompts: use the first N prompts (null: all).
        iterations: repetitions of every prompt, each with its own paired seed.
        batch_size: prompts generated together (left-padded).
    """

    def __init__(
        self,
        prompt_file: str | None = None,
        max_prompts: int | None = 10,
        iterations: int = 3,
        batch_size: int = 8,
    ) -> None:
        arguments = init_arguments(PromptDataModule, locals())
        super().__init__()
        self.init_arguments = arguments  # what it was built with (its resolved config outside LightningCLI)
        require(is_int(batch_size) and batch_size >= 1, "data.batch_size", batch_size, "an integer >= 1")
        require(is_int(iterations) and iterations >= 1, "data.iterations", iterations, "an integer >= 1")
        require(
            max_prompts is None or (is_int(max_prompts) and max_prompts >= 1),
            "data.max_prompts",
            max_prompts,
            "an integer >= 1, or null for all",
        )
        self.prompt_file = prompt_file
        self.max_prompts = max_prompts
        self.iterations = iterations
        self.batch_size = batch_size
        self.prompts: list[str] = read_prompts(prompt_file, max_prompts)

    def result_facts(self) -> dict[str, Any]:
        """What the identity adds to the data settings: the prompts by content (also the bundled ones) and how
        many were read."""
        path = self.prompt_file or BUNDLED_PROMPTS
        return {
            "prompts": file_fingerprint(path, None if self.prompt_file else "bundled:prompts.txt"),
            "prompt_count": len(self.prompts),
        }

    def train_dataloader(self) -> DataLoader:
        """``fit`` (recovery) trains on the calibration text, tokenized by the module that owns the tokenizer."""
        return self.trainer.lightning_module.recovery_train_loader()

    def val_dataloader(self) -> DataLoader:
        return self.trainer.lightning_module.recovery_val_loader()

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(
            PromptDataset(self.prompts, self.iterations),
            batch_size=self.batch_size,
            shuffle=False,
            collate_fn=collate_items,
        )
