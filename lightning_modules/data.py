"""Prompts for generation and texts for evaluation: the bundled defaults and user files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader, Dataset

ASSETS = Path(__file__).parent / "assets"
BUNDLED_PROMPTS = ASSETS / "prompts.txt"
BUNDLED_EVAL_TEXT = ASSETS / "eval_text.txt"


class DataInputError(ValueError):
    """A prompt or text file that cannot be used; the message is one line for the user."""


def read_text_file(path: str | Path, what: str) -> str:
    """Read a UTF-8 text file, refusing missing, empty, binary or non-UTF-8 files by name."""
    path = Path(path)
    if not path.is_file():
        raise DataInputError(f"{what} '{path}' does not exist or is not a file")
    raw = path.read_bytes()
    if b"\x00" in raw:
        raise DataInputError(f"{what} '{path}' is binary (contains NUL bytes); expected UTF-8 text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataInputError(f"{what} '{path}' is not UTF-8 text (byte {error.start}); expected UTF-8 text") from None
    if not text.strip():
        raise DataInputError(f"{what} '{path}' is empty; expected at least one line of text")
    return text


def read_prompts(path: str | Path | None, max_prompts: int | None) -> list[str]:
    """One prompt per non-empty line; the first ``max_prompts`` of them."""
    text = read_text_file(path or BUNDLED_PROMPTS, "prompt file")
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
    """Prompts x iterations, batched; tokenization happens in the module, which owns the tokenizer.

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
        super().__init__()
        self.prompt_file = prompt_file
        self.max_prompts = max_prompts
        self.iterations = iterations
        self.batch_size = batch_size
        self.prompts: list[str] = []

    def setup(self, stage: str | None = None) -> None:
        self.prompts = read_prompts(self.prompt_file, self.max_prompts)

    def predict_dataloader(self) -> DataLoader:
        if not self.prompts:
            self.setup("predict")
        return DataLoader(PromptDataset(self.prompts, self.iterations), batch_size=self.batch_size,
                          shuffle=False, collate_fn=collate_items)
