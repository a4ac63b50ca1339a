"""The forward (filtering) recursion of a single-topic ClassHMM: the exact next-token probabilities, which
give the optimal language-model loss on given sequences, and the filtered state posteriors
p(c_t | w_1..w_t), the Bayes-optimal predictor of the hidden state from the past alone.

    alpha_1 = pi * B[:, w_1],   alpha_t = (alpha_{t-1} A) * B[:, w_t]     (Rabiner 1989, eq. 19-20)
    p(w_t | w_<t) = sum_k alpha_t(k) / sum_k alpha_{t-1}(k)                (alpha normalised each step)

`sample_fast` draws exactly what `ClassHMM.sample` draws (the same calls on the same generator, in the
same order, so the same sequences) with a few dozen kernel launches and one host synchronisation
instead of several per position and per class: the per-position transition maps of the chain are
computed at once and composed by a doubling scan, and the emission counts are read in one transfer.
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


@torch.no_grad()
def sample_fast(hmm: ClassHMM, n: int, seq_len: int, generator: torch.Generator | None = None):
    """(tokens (n, T), classes (n, T), topics (n,)): the same draws as hmm.sample(n, seq_len, generator).

    hmm.sample consumes the generator as randint (topics), seq_len uniform draws of shape (n, 1) (the
    chain, by inverse CDF) and one multinomial per class with that class's count of positions. This
    function makes the same calls in the same order, so it returns the same tensors, but:
    - the chain: after the draws u_t, each position's transition is a map of the previous state,
      f_t(k) = #{j : cdf[z, k, j] < u_t} (the inverse-CDF rule of hmm.sample); all maps are computed in
      one comparison and composed by a doubling (Hillis-Steele) scan, c_t = f_t(...f_1(c_0)), in
      log2(seq_len) rounds instead of seq_len sequential steps;
    - the words: the class counts come to the host in one transfer, and each class's multinomial
      draws go to that class's positions in row-major order, as the boolean-mask assignment does.
    (A state above the last CDF entry by rounding is clamped to the last class in every map; there
    hmm.sample would index past the end mid-chain.)"""
    dev = hmm.start.device
    K = hmm.n_classes
    z = torch.randint(hmm.n_topics, (n,), generator=generator, device=dev)
    u = torch.empty(seq_len, n, 1, dtype=torch.float64, device=dev)
    for t in range(seq_len):                     # the same draws as hmm.sample's rand(n, 1), in order
        u[t].uniform_(generator=generator)
    c0 = (hmm.start.cumsum(0)[None] < u[0]).sum(1).clamp_(max=K - 1)
    c = c0[:, None]
    if seq_len > 1:
        cdf = hmm.trans.cumsum(-1)[z]                                     # (n, K, K)
        maps = (cdf[None] < u[1:, :, :, None]).sum(-1).clamp_(max=K - 1)  # (T-1, n, K): f_t(k)
        d = 1
        while d < seq_len - 1:                   # maps[t] <- maps[t] o maps[t - d]
            maps = torch.cat([maps[:d], maps[d:].gather(-1, maps[:-d])])
            d *= 2
        c = torch.cat([c, maps.gather(-1, c0[None, :, None].expand(seq_len - 1, n, 1))[..., 0].T], 1)
    w = torch.empty_like(c)
    flat = c.flatten()
    counts = torch.bincount(flat, minlength=K).tolist()
    draws = [torch.multinomial(hmm.emit[k], m, replacement=True, generator=generator)
             for k, m in enumerate(counts) if m]
    w.view(-1)[torch.argsort(flat, stable=True)] = torch.cat(draws)
    return w, c, z
