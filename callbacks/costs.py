"""Forward FLOPs and key/value cache entries per generated token, from the architecture and the heads that remain.

Counted as 2 x multiply-accumulates of the matrix products that dominate
decoding: the attention projections (query/output per kept query head,
key/value per kept key/value head), attention over the context (scores and
weighted values per kept query head), the MLP and the LM head. Norms,
activations and embeddings are ignored (well under 1%).
"""

from __future__ import annotations

from collections.abc import Sequence

from callbacks.protocols import Layout


def kept_per_layer(layout: Layout, pruned_heads: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Per layer, (query heads kept, key/value heads kept): a key/value head stays while one of its group does."""
    pruned: dict[int, set[int]] = {}
    for layer, head in pruned_heads:
        pruned.setdefault(layer, set()).add(head)
    kept_layers = []
    for layer in range(layout.num_layers):
        kept = [h for h in range(layout.num_heads) if h not in pruned.get(layer, set())]
        kept_layers.append((len(kept), len({h // layout.group_size for h in kept})))
    return kept_layers


def flops_per_token(layout: Layout, pruned_heads: Sequence[tuple[int, int]], context: float) -> float:
    """FLOPs to generate one token at ``context`` positions, with ``pruned_heads`` absent."""
    e, d = layout.hidden_size, layout.head_dim
    total = 2.0 * e * layout.vocab_size  # LM head
    for kept, kv_kept in kept_per_layer(layout, pruned_heads):
        total += 2.0 * e * d * (2 * kept + 2 * kv_kept)  # q, o and k, v projections
        total += 2.0 * 2 * kept * d * context  # scores and weighted values
        total += 2.0 * layout.mlp_matrices * e * layout.intermediate_size
    return total


def kv_cache_values_per_token(layout: Layout, pruned_heads: Sequence[tuple[int, int]]) -> int:
    """Key and value entries the decode cache holds per token position and row, with ``pruned_heads`` absent."""
    return sum(2 * kv_kept * layout.head_dim for _, kv_kept in kept_per_layer(layout, pruned_heads))
