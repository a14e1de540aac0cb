"""The agency layer's manipulation check: how much its states acted, counted forward by forward.

The controller feeds it the states and factors each forward runs with (``count``); it
answers the report's run-time statistics: the forwards counted, the mean heads per
state, and per non-active state the share of the kept heads' row-forwards spent in
it, with the mean gate mass the factors removed (0: the layer never acted).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor


class AgencyTally:
    """Row-forwards each head spent in each state, and the gate mass its factors removed, since ``clear``."""

    def __init__(
        self,
        state_names: Sequence[str],
        num_layers: int,
        num_heads: int,
        *,
        counts_removed: bool = True,
        device: torch.device | str = "cpu",
    ) -> None:
        self.state_names = tuple(state_names)
        self.num_layers, self.num_heads = num_layers, num_heads
        self.counts_removed = counts_removed  # false with state gating off: the factors are not applied
        self.device = torch.device(device)
        self._codes = torch.arange(len(self.state_names), device=self.device)
        self.clear()

    def clear(self) -> None:
        """Forget everything counted: the measured run starts here (warm-up and timing do not count)."""
        shape = (self.num_layers, self.num_heads)
        self.forwards = 0
        self.state_count_sum = torch.zeros(len(self.state_names), dtype=torch.float64, device=self.device)
        self.head_steps = torch.zeros(
            (*shape, len(self.state_names)), dtype=torch.float64, device=self.device
        )
        self.removed = torch.zeros(shape, dtype=torch.float64, device=self.device)

    def count(self, state: Tensor, factors: Tensor) -> None:
        """One forward that runs with ``state`` and ``factors`` ([batch, layers, heads] each)."""
        hits = (state.unsqueeze(-1) == self._codes).sum(dim=0).to(torch.float64)  # [layers, heads, states]
        self.head_steps += hits
        self.state_count_sum += hits.sum(dim=(0, 1)) / state.shape[0]
        if self.counts_removed:
            self.removed += (1.0 - factors).sum(dim=0).to(torch.float64)
        self.forwards += 1

    def mean_state_counts(self) -> dict[str, float]:
        """Heads per state per row, averaged over the forwards counted (0 before any)."""
        n = self.forwards
        mean = (self.state_count_sum / n if n else torch.zeros_like(self.state_count_sum)).tolist()
        return {name: float(mean[code]) for code, name in enumerate(self.state_names)}

    def acted(self, pruned_heads: Iterable[Sequence[int]] = ()) -> tuple[dict[str, float], float]:
        """Over the kept heads' row-forwards: the share spent in each non-active state, and the mean gate mass
        the states removed."""
        kept = torch.ones((self.num_layers, self.num_heads), dtype=torch.bool, device=self.device)
        for layer, head in pruned_heads:
            if 0 <= layer < self.num_layers and 0 <= head < self.num_heads:
                kept[layer, head] = False
        per_state = self.head_steps[kept].sum(dim=0)
        total = float(per_state.sum())
        if total == 0:
            return dict.fromkeys(self.state_names[1:], 0.0), 0.0
        shares = {name: float(per_state[code]) / total for code, name in enumerate(self.state_names) if code}
        return shares, float(self.removed[kept].sum()) / total
