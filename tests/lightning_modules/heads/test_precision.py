"""Contracts 1 and 2 in half precision: identity stays bit-exact (no hook runs), removal matches masking within
the precision's rounding. (float32 is pinned bit-exact in test_gates.py and test_adapters.py.)"""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_lms import BUILDERS, token_batch

from lightning_modules.heads.gates import attach_gates
from lightning_modules.heads.pruning import gate_values, remove_heads

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
        ],
    ),
]
# Half-precision rounding on the tiny models' logits (magnitudes up to ~10): bfloat16 keeps 8 bits of mantissa.
TOLERANCE = {torch.bfloat16: 0.1, torch.float16: 0.02, torch.float32: 1e-5}
HEADS = {
    "gpt2": [(0, 1), (1, 0), (1, 3), (2, 2)],
    "llama": [(0, 0), (0, 4), (1, 1), (2, 5)],
    "gemma3": [(0, 0), (0, 3), (1, 1), (2, 2)],
}


def _half_supported(dtype: torch.dtype, device: str) -> bool:
    try:
        torch.ones(2, 2, dtype=dtype, device=device) @ torch.ones(2, 2, dtype=dtype, device=device)
        return True
    except RuntimeError:
        return False


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_identity_masking_and_removal_in_each_precision(arch: str, dtype: torch.dtype, device: str) -> None:
    if not _half_supported(dtype, device):
        pytest.skip(f"{dtype} matmul not supported on {device}")
    plain = BUILDERS[arch]().to(device=device, dtype=dtype)
    ids, mask = token_batch(left_pad=(0, 2, 1))
    ids, mask = ids.to(device), mask.to(device)
    gated = copy.deepcopy(plain)
    gates = attach_gates(gated)
    with torch.no_grad():
        assert torch.equal(gated(ids, attention_mask=mask).logits, plain(ids, attention_mask=mask).logits)
        gates.set(gate_values(HEADS[arch], gates.layout))
        masked = gated(ids, attention_mask=mask).logits
        removed = copy.deepcopy(plain)
        remove_gates = attach_gates(removed)
        remove_heads(removed, remove_gates, HEADS[arch])
        real = mask.bool()
        difference = (
            (removed(ids, attention_mask=mask).logits[real].float() - masked[real].float()).abs().max()
        )
    assert difference <= TOLERANCE[dtype], (arch, dtype, float(difference))
    assert sum(p.numel() for p in removed.parameters()) < sum(p.numel() for p in plain.parameters())
