"""The mask update of a score-masked search (score_mask.ScoreMasked.update_mask), in fewer operations.

`swap_masks(model, rate)` leaves every ScoreMasked layer's mask exactly where `update_masks(model, rate)`
would: the same threshold `t` (the layer's (k+1)-th largest score), the same candidate pairs, the same
`n = ceil(rate c)` swaps (all of them when `c <= 1`), chosen by the same two `argsort` calls on the same
keys (so ties break as they do there). What differs is how it gets there, because it runs after every
optimizer step of a search:

- `t` comes from `topk(k + 1).values.min()`, not `kthvalue`: the same value (an order statistic), but
  on CUDA kthvalue runs one thread block per slice, so a 400k-entry layer is one block making 16
  passes over the scores; topk selects with every block;
- the chosen entries are flipped through the sort orders (`flip[order] = position < n`), without the
  rank tensor, the arange and the masked assignments per candidate set;
- `c` is the number of incoming candidates: at most k scores lie above t and k entries are kept, so
  there are never fewer outgoing than incoming candidates (min(incoming, outgoing) = incoming);
- `n` skips the `c <= 1` case where it cannot matter: for 1e-6 <= rate < 1, ceil(rate c) is c when
  c <= 1, and at rate 1 it is c (exact in float32 for c < 2^24);
- nothing synchronises with the host (the count is a 0-dim tensor), as update_mask.
"""
import math

import torch
from torch import nn

from .score_mask import ScoreMasked

_POSITIONS: dict = {}


def _positions(n: int, device) -> torch.Tensor:
    """arange(n) on `device`, built once."""
    key = (n, str(device))
    if key not in _POSITIONS:
        _POSITIONS[key] = torch.arange(n, device=device)
    return _POSITIONS[key]


@torch.no_grad()
def swap_mask(layer: ScoreMasked, rate: float = 1.0) -> torch.Tensor:
    """layer.update_mask(rate), the same result in fewer operations; the number swapped (0-dim)."""
    s, m = layer.scores.flatten(), layer.mask.flatten()     # views: m writes through to layer.mask
    size, k = s.numel(), layer.k
    t = s.topk(k + 1, sorted=False).values.min() if k < size else s.min() - 1   # the (k+1)-th largest
    above = s > t                                         # at most k entries
    incoming, outgoing = above > m, m > above             # pruned above t, kept at t or below
    c = incoming.sum()                                    # = min(incoming, outgoing): see the module's docstring
    if rate == 1.0:
        n = c
    elif 1e-6 <= rate < 1.0:
        n = torch.ceil(rate * c).long()
    elif 0.0 <= rate < 1e-6:                              # rate * c could round to 0 in float32
        n = torch.where(c <= 1, c, torch.ceil(rate * c).long())
    else:
        raise ValueError(f"rate must lie in [0, 1], not {rate}")
    first = _positions(size, s.device) < n               # the n best of a candidate set come first in its order
    flip = torch.empty_like(m)
    flip[torch.where(incoming, s, -math.inf).argsort(descending=True)] = first      # best incoming: highest s
    m ^= flip
    flip[torch.where(outgoing, -s, -math.inf).argsort(descending=True)] = first     # worst kept: lowest s
    m ^= flip
    return n


def swap_masks(model: nn.Module, rate: float = 1.0) -> torch.Tensor:
    """swap_mask(rate) in every ScoreMasked layer (= update_masks(model, rate)); the total swapped (0-dim)."""
    counts = [swap_mask(m, rate) for m in model.modules() if isinstance(m, ScoreMasked)]
    return torch.stack(counts).sum() if counts else torch.zeros((), dtype=torch.long)
