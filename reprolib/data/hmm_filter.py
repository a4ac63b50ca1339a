"""The forward (filtering) recursion of a single-topic ClassHMM: the exact next-token probabilities, which
give the optimal language-model loss on given sequences, and the filtered state posteriors
p(c_t | w_1..w_t), the Bayes-optimal predictor of the hidden state from the past alone.

    alpha_1 = pi * B[:, w_1],   alpha_t = (alpha_{t-1} A) * B[:, w_t]     (Rabiner 1989, eq. 19-20)
    p(w_t | w_<t) = sum_k alpha_t(k) / sum_k alpha_{t-1}(k)                (alpha normalised each step)
"""
from __future__ import annotations

import torch

from .class_hmm import ClassHMM


@torch.no_grad()
def forward_filter(hmm: ClassHMM, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For words w (n, T): -log p(w_t | w_<t) (n, T) and p(c_t | w_<=t) (n, T, K), float64."""
    if hmm.n_topics != 1:
        raise ValueError("forward_filter needs a single-topic HMM (n_topics=1): with topics the state is (z, c)")
    A, e = hmm.trans[0], hmm.emit[:, w].permute(1, 2, 0)       # e: (n, T, K) = B[c, w_t]
    prior = hmm.start[None].expand(e.shape[0], -1)
    nll, post = [], []
    for t in range(e.shape[1]):
        a = prior * e[:, t]
        norm = a.sum(1)
        nll.append(-norm.log())
        post.append(a / norm[:, None])
        prior = post[-1] @ A
    return torch.stack(nll, 1), torch.stack(post, 1)
