"""The sham's replay: the real layer's recorded states and factors, batch by batch, on the permuted heads."""

from __future__ import annotations

import pytest
import torch

from lightning_modules.heads.agency_state_machine import ACTIVE
from lightning_modules.heads.sham_replay import ShamReplay, TraceRecorder, permuted


def recorded() -> list:
    recorder = TraceRecorder()
    recorder.start_batch()
    state = torch.tensor([[[1, 0, 2]]])
    recorder.record(state, torch.tensor([[[0.5, 1.0, 0.7]]]))
    recorder.record(state, torch.ones(1, 1, 1))  # factors of one are expanded to the states' shape
    return recorder.trace


def test_the_recorder_keeps_copies_per_batch_and_forward() -> None:
    trace = recorded()
    assert len(trace) == 1 and len(trace[0]) == 2
    assert trace[0][1][1].shape == (1, 1, 3)


def test_replay_moves_states_and_factors_by_the_permutation_and_then_runs_active() -> None:
    index = torch.tensor([[2, 0, 1]])
    replay = ShamReplay(recorded(), index)
    like, ones = torch.zeros(1, 1, 3, dtype=torch.long), torch.ones(1, 1, 3)
    state, factors = replay.next_forward(like, ones)  # before the first batch: nothing recorded
    assert state.eq(ACTIVE).all() and factors is ones
    replay.start_batch()
    state, factors = replay.next_forward(like, ones)
    assert state.tolist() == [[[2, 1, 0]]] and torch.equal(factors, torch.tensor([[[0.7, 0.5, 1.0]]]))
    replay.next_forward(like, ones)
    state, factors = replay.next_forward(like, ones)  # past the recorded forwards
    assert state.eq(ACTIVE).all() and factors is ones


def test_replay_refuses_a_batch_of_another_size() -> None:
    replay = ShamReplay(recorded(), None)
    replay.start_batch()
    with pytest.raises(ValueError, match="same order and sizes"):
        replay.next_forward(torch.zeros(2, 1, 3, dtype=torch.long), torch.ones(2, 1, 3))


def test_permuted_gives_head_h_the_value_of_its_index() -> None:
    assert permuted(torch.tensor([[[10, 20, 30]]]), torch.tensor([[1, 2, 0]])).tolist() == [[[20, 30, 10]]]
