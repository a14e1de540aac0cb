"""What the harness needs to know about an architecture, asked of one adapter per family.

The rest of the code never looks at a model's type: it asks the adapter where
the attention modules and their output projections are, how the heads are laid
out (query heads, key/value groups, head size), how long the context is, and
how to slice heads out of the weights. Adding a family is one adapter module,
registered in ``adapters/__init__.py``, plus its contract tests.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn


@dataclass(frozen=True)
class HeadLayout:
    """The shape of a model's attention, independent of the architecture's module names."""

    family: str
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    intermediate_size: int
    vocab_size: int
    mlp_matrices: int  # 2 for GPT-2 (fc, proj), 3 for gated Llama MLPs

    @property
    def total_heads(self) -> int:
        return self.num_layers * self.num_heads

    @property
    def group_size(self) -> int:
        return self.num_heads // self.num_kv_heads


class ArchitectureAdapter(ABC):
    """Where one family keeps its attention, and how its heads are sliced."""

    family: ClassVar[str]
    model_types: ClassVar[tuple[str, ...]]  # transformers ``config.model_type`` values it handles

    @abstractmethod
    def layout(self, config: Any) -> HeadLayout:
        """The head layout read from a transformers config."""

    @abstractmethod
    def context_length(self, config: Any) -> int:
        """Positions the model can attend to."""

    @abstractmethod
    def layers(self, model: nn.Module) -> Sequence[nn.Module]:
        """The transformer blocks, in order."""

    @abstractmethod
    def attention_of(self, block: nn.Module) -> nn.Module:
        """The self-attention module of one block."""

    @abstractmethod
    def set_attention(self, block: nn.Module, module: nn.Module) -> None:
        """Replace one block's self-attention (a layer whose heads were all removed)."""

    @abstractmethod
    def output_projection(self, attention: nn.Module) -> nn.Module:
        """The projection where the heads' outputs meet (the gates' hook point)."""

    @abstractmethod
    def head_weights(self, attention: nn.Module, head: int, layout: HeadLayout) -> list[torch.Tensor]:
        """The query, key, value and output weight slices that belong to one query head."""

    @abstractmethod
    def keep_heads(self, attention: nn.Module, keep: list[int], layout: HeadLayout) -> None:
        """Slice an attention module down to the query heads in ``keep`` (in place)."""

    @abstractmethod
    def mlp_of(self, block: nn.Module) -> nn.Module:
        """The feed-forward part of one block."""

    def attention_modules(self, model: nn.Module) -> list[nn.Module]:
        return [self.attention_of(block) for block in self.layers(model)]

    def output_bias(self, attention: nn.Module) -> torch.Tensor | None:
        return getattr(self.output_projection(attention), "bias", None)

    def attention_parameters(self, model: nn.Module) -> Iterator[nn.Parameter]:
        for attention in self.attention_modules(model):
            yield from attention.parameters()

    def mlp_parameters(self, model: nn.Module) -> Iterator[nn.Parameter]:
        for block in self.layers(model):
            yield from self.mlp_of(block).parameters()


def rows_of_heads(heads: Sequence[int], head_dim: int, device: torch.device) -> torch.Tensor:
    """Feature indices of ``heads`` in a [heads * head_dim] axis."""
    if not heads:
        return torch.empty(0, dtype=torch.long, device=device)
    return torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim) for h in heads]).to(device)
