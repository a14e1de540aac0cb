"""The sham control's exact replay: the real layer's states and factors, recorded, then run on other heads.

The real layer of a sham condition runs first with a ``TraceRecorder``: per batch, per
forward, the states and factors it ran with. The sham then runs the same batches with a
``ShamReplay`` as its factor provider: forward by forward it hands back the recorded
states and factors, moved to other kept heads of each layer by the sham's permutation,
so the sham damps exactly as many head-steps of each layer, by the same factors, at the
same forwards and rows, as the real layer did.
"""

from __future__ import annotations

from torch import Tensor

from lightning_modules.heads.agency_state_machine import ACTIVE

Trace = list[list[tuple[Tensor, Tensor]]]  # per batch, per forward: (states, factors) [batch, layers, heads]


def permuted(tensor: Tensor, sham_index: Tensor) -> Tensor:
    """``tensor`` [batch, layers, heads] with head h taking the value of head ``sham_index[layer, h]``."""
    return tensor.gather(2, sham_index.expand_as(tensor))


class TraceRecorder:
    """Keeps the states and factors every forward runs with, batch by batch (the real layer of a sham)."""

    def __init__(self) -> None:
        self.trace: Trace = []

    def start_batch(self) -> None:
        self.trace.append([])

    def record(self, state: Tensor, factors: Tensor) -> None:
        if not self.trace:
            self.start_batch()
        self.trace[-1].append((state.clone(), factors.expand_as(state).clone()))


class ShamReplay:
    """The sham's factor provider: the recorded batches in order, each forward's states and factors moved by
    ``sham_index`` ([layers, heads]; None: not moved). Forwards past a batch's trace run with every head
    active (the real layer never ran them)."""

    def __init__(self, trace: Trace, sham_index: Tensor | None) -> None:
        self.trace = trace
        self.sham_index = sham_index
        self._batch = -1
        self._forward = 0

    def start_batch(self) -> None:
        """The next ``reset`` of the controller: batch k of the trace serves the k-th."""
        self._batch += 1
        self._forward = 0

    def next_forward(self, like: Tensor, ones: Tensor) -> tuple[Tensor, Tensor]:
        """(states, factors) of the forward now starting; ``like``/``ones``: the shapes of this batch."""
        batch = self.trace[self._batch] if 0 <= self._batch < len(self.trace) else []
        forward, self._forward = self._forward, self._forward + 1
        if forward >= len(batch):
            return like.new_full(like.shape, ACTIVE), ones
        state, factors = batch[forward]
        if tuple(state.shape) != tuple(like.shape):
            raise ValueError(
                f"replayed states have shape {tuple(state.shape)}; expected {tuple(like.shape)} "
                "(the sham must run the real layer's batches in the same order and sizes)"
            )
        if self.sham_index is not None:
            state, factors = permuted(state, self.sham_index), permuted(factors, self.sham_index)
        return state, factors
