"""The tally: what every forward ran with, counted into the report's manipulation check."""

from __future__ import annotations

import torch

from lightning_modules.heads.agency_tally import AgencyTally

NAMES = ("active", "overloaded", "misaligned", "withdrawn")


def test_shares_and_removed_mass_over_the_kept_heads() -> None:
    tally = AgencyTally(NAMES, num_layers=1, num_heads=2)
    state = torch.tensor([[[1, 0]], [[0, 0]]])  # two rows: head 0 overloaded in row 0
    factors = torch.tensor([[[0.5, 1.0]], [[1.0, 1.0]]])
    for _ in range(3):
        tally.count(state, factors)
    shares, removed = tally.acted()
    assert shares == {"overloaded": 0.25, "misaligned": 0.0, "withdrawn": 0.0} and removed == 0.5 * 0.25
    assert tally.acted([(0, 0)]) == ({"overloaded": 0.0, "misaligned": 0.0, "withdrawn": 0.0}, 0.0)
    assert tally.forwards == 3
    assert tally.mean_state_counts() == {
        "active": 1.5,
        "overloaded": 0.5,
        "misaligned": 0.0,
        "withdrawn": 0.0,
    }


def test_without_gating_no_mass_is_removed() -> None:
    tally = AgencyTally(NAMES, 1, 1, counts_removed=False)
    tally.count(torch.tensor([[[3]]]), torch.zeros(1, 1, 1))
    assert tally.acted() == ({"overloaded": 0.0, "misaligned": 0.0, "withdrawn": 1.0}, 0.0)


def test_nothing_counted_reads_zero_and_clear_forgets() -> None:
    tally = AgencyTally(NAMES, 2, 2)
    assert tally.acted() == ({"overloaded": 0.0, "misaligned": 0.0, "withdrawn": 0.0}, 0.0)
    assert set(tally.mean_state_counts().values()) == {0.0}
    tally.count(torch.ones(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 0.5))
    tally.clear()
    assert tally.forwards == 0 and tally.head_steps.sum() == 0 and tally.removed.sum() == 0
