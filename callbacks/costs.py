"""Forward FLOPs per generated token, from the architecture and the heads that remain.

Counted as 2 x multiply-accumulates of the matrix products that dominate
decoding: the attention projections (query/output per kept query head,
key/value per kept key/value head), attention over the context (scores and
weighted values per kept query head), the MLP and the LM head. Norms,
activations and embeddings are ignored (well under 1%).
"""

from __future__ import annotations

from collections.abc import Sequence

from callbacks.protocols import Layout


def flops_per_token(layout: Layout, pruned_heads: Sequence[tuple[int, int]], context: int) -> float:
    """FLOPs to generate one token at ``context`` positions, with ``pruned_heads`` absent."""
    pruned: dict[int, set[int]] = {}
    for layer, head in pruned_heads:
        pruned.setdefault(layer, set()).add(head)
    e, d = layout.hidden_size, layout.head_dim
    total = 2.0 * e * layout.vocab_size  # LM head
    for layer in range(layout.num_layers):
        kept = [h for h in range(layout.num_heads) if h not in pruned.get(layer, set())]
        kv_kept = len({h // layout.group_size for h in kept})
        total += 2.0 * e * d * (2 * len(kept) + 2 * kv_kept)  # q, o and k, v projections
        total += 2.0 * 2 * len(kept) * d * context  # scores and weighted values
        total += 2.0 * layout.mlp_matrices * e * layout.intermediate_size
    return total
