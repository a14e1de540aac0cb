"""Recovery after pruning: distil the unpruned model (teacher) into a pruned arm (student).

The teacher is the loaded model with every head and no agency, frozen; the
student is a copy with this condition's pruned heads (and its agency layer, its
run-time states active). The loss is the KL divergence between their next-token
distributions at temperature ``kd_temperature`` (times T², as usual), optionally
mixed with the language-modelling loss. Training reads only the calibration text
(never the evaluation text): its windows are split into a training part and a
held-out validation slice at the end.

Every batch is a function of (seed, epoch, batch index), an epoch is
``checkpoint_every`` steps, and a checkpoint is written after every epoch: an
interrupted fit resumes from its last checkpoint and replays exactly the batches
an uninterrupted one would have seen (dropout stays off: the student trains in
evaluation mode, as distillation of a short recovery usually does).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from lightning_modules.models.adapters import ArchitectureAdapter
from record.errors import is_int, is_number, require

TRAINABLE = ("all", "attention", "mlp", "pruned_layers")
CHECKPOINT_FORMAT = 1


@dataclass
class RecoveryConfig:
    """A short distillation fine-tune of the pruned model (``pruning-agency fit``).

    Args:
        steps: optimiser steps in all.
        batch_size: calibration windows per step.
        window: tokens per window.
        learning_rate: AdamW peak learning rate (after a linear warm-up, cosine decay to 0).
        weight_decay: AdamW weight decay.
        warmup_steps: steps of linear warm-up.
        gradient_clip: largest gradient norm (0: no clipping).
        kd_temperature: temperature of the distillation KL divergence.
        lm_weight: weight of the language-modelling loss mixed in (0: distillation only).
        train: which parameters train: all (every transformer block), attention, mlp, or pruned_layers
            (every parameter of the blocks that lost heads).
        validation_fraction: share of the calibration windows held out for validation (the last ones).
        checkpoint_every: steps per epoch; a validation and a checkpoint follow every epoch.
    """

    steps: int = 120
    batch_size: int = 2
    window: int = 256
    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 10
    gradient_clip: float = 1.0
    kd_temperature: float = 2.0
    lm_weight: float = 0.0
    train: Literal["all", "attention", "mlp", "pruned_layers"] = "attention"
    validation_fraction: float = 0.1
    checkpoint_every: int = 40

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every"):
            value = getattr(self, name)
            require(is_int(value) and value >= 1, f"model.recovery.{name}", value, "an integer >= 1")
        require(
            is_int(self.window) and self.window >= 2, "model.recovery.window", self.window, "an integer >= 2"
        )
        require(
            is_int(self.warmup_steps) and 0 <= self.warmup_steps < self.steps,
            "model.recovery.warmup_steps",
            self.warmup_steps,
            f"an integer from 0 to model.recovery.steps - 1 ({self.steps - 1})",
        )
        for name in ("learning_rate", "kd_temperature"):
            value = getattr(self, name)
            require(is_number(value) and value > 0, f"model.recovery.{name}", value, "a number > 0")
        for name in ("weight_decay", "gradient_clip", "lm_weight"):
            value = getattr(self, name)
            require(is_number(value) and value >= 0, f"model.recovery.{name}", value, "a number >= 0")
        require(
            is_number(self.validation_fraction) and 0 < self.validation_fraction < 1,
            "model.recovery.validation_fraction",
            self.validation_fraction,
            "a number in (0, 1)",
        )
        require(
            self.train in TRAINABLE, "model.recovery.train", self.train, ", ".join(TRAINABLE), "is not known"
        )

    @property
    def epochs(self) -> int:
        return math.ceil(self.steps / self.checkpoint_every)


def split_windows(
    ids: torch.Tensor, window: int, validation_fraction: float, start: Sequence[int] = ()
) -> tuple[torch.Tensor, torch.Tensor]:
    """Full, disjoint windows of the calibration text, each after the model's sequence-start tokens ``start``
    (its ``<bos>`` where it has one): (training windows, the held-out last ones)."""
    count = len(ids) // window
    if count < 2:
        raise ValueError(f"the calibration text holds {len(ids)} tokens: fewer than two windows of {window}")
    windows = ids[: count * window].view(count, window)
    if start:
        windows = torch.cat(
            [torch.tensor(list(start), dtype=ids.dtype).expand(count, len(start)), windows], 1
        )
    held_out = max(1, round(validation_fraction * count))
    return windows[: count - held_out], windows[count - held_out :]


class EpochSampler(Sampler[int]):
    """Window indices for one epoch: a seeded function of (seed, epoch), so a resumed fit replays its batches.

    ``epoch_of`` reads the epoch when iteration starts (the trainer's ``current_epoch``): the epoch Lightning
    passes to ``set_epoch`` counts one further after a resume from an end-of-epoch checkpoint.
    """

    def __init__(
        self, windows: int, per_epoch: int, seed: int, epoch_of: Callable[[], int] | None = None
    ) -> None:
        self.windows, self.per_epoch, self.seed, self.epoch, self.epoch_of = (
            windows,
            per_epoch,
            seed,
            0,
            epoch_of,
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if self.epoch_of is not None:
            self.epoch = self.epoch_of()
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        indices: list[int] = []
        while len(indices) < self.per_epoch:
            indices += torch.randperm(self.windows, generator=generator).tolist()
        return iter(indices[: self.per_epoch])

    def __len__(self) -> int:
        return self.per_epoch


def train_loader(
    windows: torch.Tensor, config: RecoveryConfig, seed: int, epoch_of: Callable[[], int] | None = None
) -> DataLoader:
    sampler = EpochSampler(len(windows), config.checkpoint_every * config.batch_size, seed, epoch_of)
    return DataLoader(windows, batch_size=config.batch_size, sampler=sampler, drop_last=False)


def validation_loader(windows: torch.Tensor, config: RecoveryConfig) -> DataLoader:
    return DataLoader(windows, batch_size=config.batch_size, shuffle=False)


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """T² x KL(teacher || student) of the next-token distributions, averaged over positions."""
    vocab = student_logits.shape[-1]
    student = torch.log_softmax(student_logits.float().reshape(-1, vocab) / temperature, dim=-1)
    teacher = torch.log_softmax(teacher_logits.float().reshape(-1, vocab) / temperature, dim=-1)
    kl = nn.functional.kl_div(student, teacher, log_target=True, reduction="batchmean")
    return kl * temperature**2


def language_model_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)
    )


def trainable_parameters(
    model: nn.Module, adapter: ArchitectureAdapter, choice: str, layers_with_pruned_heads: set[int]
) -> list[nn.Parameter]:
    """Freeze everything, then unfreeze the chosen part; embeddings and the LM head always stay frozen."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    blocks = adapter.layers(model)
    if choice == "all":
        chosen = [p for block in blocks for p in block.parameters()]
    elif choice == "attention":
        chosen = list(adapter.attention_parameters(model))
    elif choice == "mlp":
        chosen = list(adapter.mlp_parameters(model))
    else:
        chosen = [
            p for i, block in enumerate(blocks) if i in layers_with_pruned_heads for p in block.parameters()
        ]
    unique = list({id(p): p for p in chosen}.values())
    for parameter in unique:
        parameter.requires_grad_(True)
    return unique


def warmup_cosine(config: RecoveryConfig) -> Any:
    """Learning-rate factor per step: linear warm-up, then cosine decay to 0 at ``steps``."""

    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / (config.warmup_steps + 1)
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def load_recovered(path: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The student weights and the recovery description of a fit checkpoint."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    meta = checkpoint.get("recovery")
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"'{path}' is not a checkpoint written by pruning-agency fit")
    prefix = "student."
    weights = {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    return weights, meta
