"""How much each token's residual-stream state changes from block to block.

For the residual stream h_0, h_1, ..., h_L of a transformer (h_0 the input embeddings, h_l the output of
block l), per token i:

    norm        ||h_l(i)||
    rho_l(i)    = ||h_{l+1}(i) - h_l(i)|| / ||h_l(i)||           the relative update of block l
    1 - cos_l(i) = 1 - <h_l(i), h_{l+1}(i)> / (||h_l(i)|| ||h_{l+1}(i)||)   the change of direction

(Li et al., "The Unseen Bias: How Norm Discrepancy in Pre-Norm MLLMs Leads to Visual Information Loss",
arXiv 2512.08374: high-norm visual tokens have a small rho, "representational inertia".)
`block_states` reads the stream from forward hooks on the blocks, independently of any model's own
bookkeeping, so the two can be checked against each other.
"""
from __future__ import annotations

import torch


def _wide(h: torch.Tensor) -> torch.Tensor:
    """float32 at least (bf16 states are upcast; float64 stays float64)."""
    return h.to(torch.promote_types(h.dtype, torch.float32))


def token_norms(states) -> torch.Tensor:
    """[L+1, n, T]: the norm of every token's state before the first block and after each block."""
    return torch.stack([_wide(h).norm(dim=-1) for h in states])


def relative_update(states) -> torch.Tensor:
    """[L, n, T]: rho_l = ||h_{l+1} - h_l|| / ||h_l|| per token and block."""
    return torch.stack([(_wide(b) - _wide(a)).norm(dim=-1) / _wide(a).norm(dim=-1)
                        for a, b in zip(states[:-1], states[1:])])


def direction_change(states) -> torch.Tensor:
    """[L, n, T]: 1 - cos(h_l, h_{l+1}) per token and block."""
    return torch.stack([1 - torch.nn.functional.cosine_similarity(_wide(a), _wide(b), dim=-1)
                        for a, b in zip(states[:-1], states[1:])])


def block_states(blocks, fn) -> list:
    """Run fn() and return [input of blocks[0], output of each block] captured by forward hooks (a block may
    return a tuple whose first item is the stream, as the GPT's blocks do)."""
    states, handles = [], []
    first = lambda mod, args: states.append(args[0].detach())
    last = lambda mod, args, out: states.append((out[0] if isinstance(out, tuple) else out).detach())
    handles.append(blocks[0].register_forward_pre_hook(first))
    handles += [b.register_forward_hook(last) for b in blocks]
    try:
        fn()
    finally:
        for h in handles:
            h.remove()
    return states


def group_means(x: torch.Tensor, groups: dict) -> dict:
    """{name: mean of x[..., columns] over all but the first axis} for token-column groups, e.g.
    {'visual': slice(0, 16), 'text': slice(16, None)} on an [L, n, T] tensor -> {name: [L]}."""
    return {name: x[..., cols].flatten(1).mean(1) for name, cols in groups.items()}
