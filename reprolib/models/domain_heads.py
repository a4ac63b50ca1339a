"""Domain-specific classifier heads and their test-time selection (DRM).

Zhang, Wang, Liang, et al., "Domain-Specific Risk Minimization for Out-of-Distribution Generalization",
KDD 2023, arXiv 2208.08661; official code github.com/yfzhang114/AdaNPC (`domainbed/algorithms.py`,
class DRM; `domainbed/adapt_algorithms.py`, DRMFull.entropy_predict_label_drm).

A shared featurizer f feeds K + 1 linear heads: h_1..h_K, one per source domain, and h_{K+1} trained on
every domain. Training (DRM.update):

    L = 1/K sum_d [ CE(h_d(f(x_d)), y_d) + CE(h_{K+1}(f(x_d)), y_d) ] / 2

Test time, with H_i(x) the entropy of softmax(h_i(f(x))), the prediction of the "least uncertain" source
hypothesis: per batch (DRM.forward) the head with the lowest mean entropy over the batch; per sample
(entropy_predict_label_drm, gamma < 0) the head with the lowest entropy for that sample; or soft
(gamma >= 0) the weights w_i = H_i^-gamma, L1-normalised over the K + 1 heads, summed over the K domain
heads only (the official loop stops at num_domains).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DomainHeads(nn.Module):
    """K + 1 linear heads on one feature vector: [b, d] -> logits [K + 1, b, c]. A drop-in for a model's
    last nn.Linear (reprolib.layers.swap_modules), so the model's forward returns every head's logits."""

    def __init__(self, in_features: int, n_classes: int, n_domains: int):
        super().__init__()
        self.n_domains = n_domains
        self.heads = nn.ModuleList(nn.Linear(in_features, n_classes) for _ in range(n_domains + 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.stack([h(z) for h in self.heads])


def drm_loss(logits: torch.Tensor, y: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
    """The DRM training loss above. logits [K + 1, b, c]; y [b]; domain [b] in 0..K-1 (the source
    domain of each row; each domain's CE is its own mean, as the official per-minibatch loop)."""
    k = logits.shape[0] - 1
    total = logits.new_zeros(())
    for d in range(k):
        m = domain == d
        total = total + (F.cross_entropy(logits[d, m], y[m]) + F.cross_entropy(logits[k, m], y[m])) / 2
    return total / k


def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    """H(softmax(logits)) over the last dimension."""
    return -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1)


def select_batch(logits: torch.Tensor) -> tuple[torch.Tensor, int]:
    """DRM.forward: (logits [b, c] of the head with the lowest batch-mean entropy, its index)."""
    i = int(softmax_entropy(logits).mean(-1).argmin())
    return logits[i], i


def select_sample(logits: torch.Tensor, gamma: float = -1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """entropy_predict_label_drm: (probabilities [b, c], weights [K + 1, b]). gamma < 0: each sample takes
    the softmax of its own least-entropy head (one-hot weights); gamma >= 0: sum over the K domain heads of
    w_i p_i with w_i = H_i^-gamma / sum_j H_j^-gamma (j over all K + 1 heads)."""
    p, h = logits.softmax(-1), softmax_entropy(logits)          # [K+1, b, c], [K+1, b]
    if gamma < 0:
        w = F.one_hot(h.argmin(0), len(logits)).T.to(p.dtype)
        return (w[..., None] * p).sum(0), w
    w = F.normalize(h.pow(-gamma), p=1, dim=0)
    return (w[:-1, :, None] * p[:-1]).sum(0), w


def drm_loss_blocks(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """drm_loss for minibatches laid out in equal per-domain blocks (domain d: rows d*b .. (d+1)*b - 1),
    without masks (no device synchronisation), over any leading dimensions (e.g. the members of a
    ModelStack): logits [..., K + 1, K * b, c]; y [..., K * b] -> loss [...]. The same value as
    drm_loss(logits, y, torch.arange(K).repeat_interleave(b)) per leading index, up to summation order."""
    *lead, h, n, c = logits.shape
    k = h - 1
    if n % k:
        raise ValueError(f"{n} rows do not split into {k} equal domain blocks")
    z = logits.reshape(*lead, h, k, n // k, c)
    own = z[..., :k, :, :, :].diagonal(dim1=-4, dim2=-3).movedim(-1, -3)   # [..., K, b, c]: head d on domain d
    pooled = z[..., k, :, :, :]                                              # [..., K, b, c]: head K+1 on domain d
    yb = y.reshape(*lead, k, n // k)

    def ce(z_):                                                          # per-domain mean CE -> [..., K]
        return F.cross_entropy(z_.flatten(0, -2), yb.flatten(), reduction="none").view(yb.shape).mean(-1)
    return ((ce(own) + ce(pooled)) / 2).mean(-1)
