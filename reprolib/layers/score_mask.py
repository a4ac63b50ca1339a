"""Score-masked layers: a frozen pretrained weight times a binary mask searched through learnable scores.

Lottery Jackpots Exist in Pre-trained Models (Zhang, Lin, Chen, Chao, Ji; TPAMI 2023),
https://arxiv.org/abs/2104.08700; the scores and the straight-through mask follow edge-popup
(Ramanujan et al., What's Hidden in a Randomly Weighted Neural Network?, https://arxiv.org/abs/1911.13299).

A layer computes with `W ⊙ m`: `W` the pretrained weight (frozen during a search), `m` a binary mask
that keeps exactly `k` entries. The mask is a function of the scores `S` (same shape as `W`):

    forward   m = b                               (the layer's binary mask, kept in a buffer)
    backward  dL/dS = dL/dm = dL/d(W ⊙ m) ⊙ W     (straight-through: the mask's gradient goes to S)

After each optimizer step the mask follows the scores (`update_mask`): with `t` the layer's k-th
largest score, the candidates are pruned entries whose score rose above `t` and kept entries whose
score fell to `t` or below; the paper's *short restriction* swaps only the `ceil(rate * c)` best
pairs of the `c` candidate pairs (highest incoming, lowest outgoing), so `k` is preserved and a mask
changes slowly while `rate` decays. `rate = 1` is the plain top-k of the scores (edge-popup).
Score initialisation from magnitude pruning, as the official code: 1 for kept, 0.99 for pruned entries.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from .swap import swap_modules


def topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the `k` largest entries of `scores` (any shape), exactly `k` True."""
    flat = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    flat[scores.flatten().topk(k).indices] = True
    return flat.view_as(scores)


class StraightThroughMask(torch.autograd.Function):
    """forward: the binary mask; backward: its gradient passed unchanged to the scores."""
    @staticmethod
    def forward(ctx, scores, mask):
        return mask.to(scores.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class ScoreMasked(nn.Module):
    """Wrap an nn.Linear or nn.Conv2d: forward with `weight ⊙ mask`; `scores` is a parameter of the
    weight's shape. `mask` (bool, the weight's shape) sets k; scores start as init_scores(kind)."""

    def __init__(self, layer: nn.Module, mask: torch.Tensor, kind: str = "magnitude", generator=None):
        super().__init__()
        if not isinstance(layer, (nn.Linear, nn.Conv2d)):
            raise TypeError(f"ScoreMasked wraps nn.Linear or nn.Conv2d, not {type(layer).__name__}")
        self.layer = layer
        self.register_buffer("mask", mask.to(layer.weight.device, torch.bool).clone())
        self.k = int(self.mask.sum())
        self.scores = nn.Parameter(torch.empty_like(layer.weight))
        self.init_scores(kind, generator)

    @torch.no_grad()
    def init_scores(self, kind: str, generator=None) -> None:
        """'magnitude': 1 on the mask, 0.99 off it (the official code), the mask unchanged;
        'random': |kaiming-uniform| (edge-popup's scale, 1/sqrt(fan_in)) and the mask = their top-k."""
        if kind == "magnitude":
            self.scores.copy_(torch.where(self.mask, 1.0, 0.99))
        elif kind == "random":
            bound = 1.0 / math.sqrt(self.scores[0].numel())
            self.scores.copy_(torch.rand(self.scores.shape, generator=generator, device=self.scores.device) * bound)
            self.mask.copy_(topk_mask(self.scores, self.k))
        else:
            raise ValueError(f"unknown score init {kind!r}; valid: 'magnitude', 'random'")

    def masked_weight(self) -> torch.Tensor:
        return self.layer.weight * StraightThroughMask.apply(self.scores, self.mask)   # W ⊙ m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.masked_weight()
        if isinstance(self.layer, nn.Conv2d):
            return self.layer._conv_forward(x, w, self.layer.bias)
        return F.linear(x, w, self.layer.bias)

    @torch.no_grad()
    def update_mask(self, rate: float = 1.0) -> torch.Tensor:
        """Move the mask towards the top-k of the scores, swapping ceil(rate * c) of the c candidate
        pairs (all when c = 1, as the official code); return the number swapped (a 0-dim tensor, no
        host sync)."""
        s, m = self.scores.flatten(), self.mask.flatten()
        t = s.kthvalue(s.numel() - self.k).values if self.k < s.numel() else s.min() - 1   # k-th largest is above t
        incoming, outgoing = ~m & (s > t), m & (s <= t)
        c = torch.minimum(incoming.sum(), outgoing.sum())
        n = torch.where(c <= 1, c, torch.ceil(rate * c).long())
        for cand, sign, value in ((incoming, 1.0, True), (outgoing, -1.0, False)):
            key = torch.where(cand, sign * s, -math.inf)
            rank = torch.empty_like(m, dtype=torch.long)
            rank[key.argsort(descending=True)] = torch.arange(s.numel(), device=s.device)
            m[cand & (rank < n)] = value
        return n


def score_masked(model: nn.Module, masks: dict[str, torch.Tensor], kind: str = "magnitude",
                 generator=None) -> dict[str, ScoreMasked]:
    """Swap each layer named in `masks` for a ScoreMasked around it (in place), sharing its parameters."""
    return swap_modules(model, lambda name, m: name in masks,
                        lambda name, m: ScoreMasked(m, masks[name], kind, generator))


def magnitude_masks(model: nn.Module, sparsity: float, names) -> dict[str, torch.Tensor]:
    """Global magnitude pruning over the named layers' weights: drop the round(sparsity * total)
    smallest |W| (one threshold for all, so layers get their own sparsities), keep the rest."""
    layers = dict(model.named_modules())
    ws = [layers[n].weight.detach() for n in names]
    flat = torch.cat([w.abs().flatten() for w in ws])
    keep = topk_mask(flat, flat.numel() - round(sparsity * flat.numel()))
    out, i = {}, 0
    for n, w in zip(names, ws):
        out[n] = keep[i:i + w.numel()].view_as(w)
        i += w.numel()
    return out


def update_masks(model: nn.Module, rate: float = 1.0) -> torch.Tensor:
    """update_mask(rate) in every ScoreMasked layer; the total swapped (0-dim tensor)."""
    return sum(m.update_mask(rate) for m in model.modules() if isinstance(m, ScoreMasked))


def short_restriction_rate(epoch: float, epochs: int) -> float:
    """The official ImageNet script's swap rate: 0.5 (1 + cos(pi e / E)), from 1 down to 0."""
    return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """Intersection over union of two boolean masks."""
    return float((a & b).sum()) / max(1, int((a | b).sum()))
