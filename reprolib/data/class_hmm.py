"""A topic-switched class HMM: token sequences with exact token-level and sequence-level labels.

Each sequence draws a topic z; its word classes c_1..c_T follow a Markov chain whose transition matrix
depends on the topic, and each word w_t is drawn from class c_t's lexicon:

    z ~ Uniform(n_topics),   c_1 ~ pi,   c_t ~ A_z[c_{t-1}, :],   w_t ~ B[c_t, :]
    A_z = (1 - topic_mix) A_shared + topic_mix A_topic(z)
    (every row has the same `successors` classes in all topics; the topics differ only in their weights,
    so a topic shows only through many transitions)

Every word belongs to `classes_per_word` classes, so a word alone does not give its class: tagging c_t
and classifying z both need context, as the downstream tasks of a pretrained encoder do. Within a class,
words follow a Zipf(1) law in a random order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class ClassHMM:
    start: torch.Tensor        # (K,) pi
    trans: torch.Tensor        # (n_topics, K, K) A_z, rows sum to 1
    emit: torch.Tensor         # (K, V) B, rows sum to 1
    vocab_size: int
    n_classes: int
    n_topics: int

    def to(self, device) -> "ClassHMM":
        return ClassHMM(self.start.to(device), self.trans.to(device), self.emit.to(device), self.vocab_size,
                        self.n_classes, self.n_topics)

    def sample(self, n: int, seq_len: int, generator: torch.Generator | None = None):
        """(tokens (n, T), classes (n, T), topics (n,)), int64 on the parameters' device. The chain by
        inverse-CDF draws, the words class by class (one multinomial per class)."""
        dev = self.start.device
        rand = lambda *shape: torch.rand(shape, generator=generator, device=dev, dtype=torch.float64)
        cdf = self.trans.cumsum(-1)
        z = torch.randint(self.n_topics, (n,), generator=generator, device=dev)
        c = torch.empty(n, seq_len, dtype=torch.long, device=dev)
        c[:, 0] = (self.start.cumsum(0)[None] < rand(n, 1)).sum(1)
        for t in range(1, seq_len):
            c[:, t] = (cdf[z, c[:, t - 1]] < rand(n, 1)).sum(1)
        c.clamp_(max=self.n_classes - 1)   # a u above the last cdf entry by rounding
        w = torch.empty_like(c)
        for k in range(self.n_classes):
            at = c == k
            m = int(at.sum())
            if m:
                w[at] = torch.multinomial(self.emit[k], m, replacement=True, generator=generator)
        return w, c, z

    @torch.no_grad()
    def posteriors(self, w: torch.Tensor):
        """Exact posteriors given the words w (n, T): p(z | w) (n, n_topics) and p(c_t | w) (n, T, K), by the
        scaled forward-backward recursions under each topic, mixed by p(z | w):
            alpha_t = (alpha_{t-1} A_z) * B[:, w_t],   beta_t = A_z (B[:, w_{t+1}] * beta_{t+1})."""
        e = self.emit[:, w].permute(1, 2, 0)                       # (n, T, K): B[c, w_t]
        n, T, K = e.shape
        loglik, marg = [], []
        for A in self.trans:
            a = self.start[None] * e[:, 0]
            norms = [a.sum(1, keepdim=True)]
            alphas = [a / norms[0]]
            for t in range(1, T):
                a = (alphas[-1] @ A) * e[:, t]
                norms.append(a.sum(1, keepdim=True))
                alphas.append(a / norms[-1])
            b = torch.ones(n, K, dtype=e.dtype, device=e.device)
            betas = [b]
            for t in range(T - 1, 0, -1):
                b = (e[:, t] * b) @ A.T
                betas.append(b / b.sum(1, keepdim=True))
            m = torch.stack(alphas, 1) * torch.stack(betas[::-1], 1)
            marg.append(m / m.sum(-1, keepdim=True))
            loglik.append(torch.cat(norms, 1).log().sum(1))
        loglik = torch.stack(loglik, 1) + torch.tensor(1.0 / self.n_topics, dtype=e.dtype).log()
        p_z = (loglik - loglik.logsumexp(1, keepdim=True)).exp()
        p_c = torch.einsum("nz,zntk->ntk", p_z, torch.stack(marg))
        return p_z, p_c

    def bayes_accuracy(self, w, c, z) -> dict:
        """Accuracy (%) of the Bayes-optimal predictors, argmax p(c_t | w) and argmax p(z | w): the ceilings
        of the two downstream tasks."""
        p_z, p_c = self.posteriors(w)
        tag = 100 * float((p_c.argmax(-1) == c).double().mean())
        topic = 100 * float((p_z.argmax(-1) == z).double().mean())
        return dict(tag=tag, topic=topic, mean=(tag + topic) / 2)


def class_hmm(vocab_size: int = 1000, n_classes: int = 32, n_topics: int = 4, classes_per_word: int = 2,
              successors: int = 16, topic_mix: float = 0.3, seed: int = 0) -> ClassHMM:
    """The generator's parameters, from the seed alone."""
    if classes_per_word > n_classes or successors > n_classes:
        raise ValueError("classes_per_word and successors must not exceed n_classes")
    rng = np.random.default_rng(seed)
    K, V = n_classes, vocab_size

    support = np.stack([rng.choice(K, successors, replace=False) for _ in range(K)])

    def rows():   # Dirichlet(1) weights on every class's successors
        A = np.zeros((K, K))
        np.put_along_axis(A, support, rng.dirichlet(np.ones(successors), size=K), axis=1)
        return A

    shared = rows()
    trans = np.stack([(1 - topic_mix) * shared + topic_mix * rows() for _ in range(n_topics)])
    member = np.zeros((K, V), bool)
    for w in range(V):
        member[rng.choice(K, classes_per_word, replace=False), w] = True
    for k in np.flatnonzero(~member.any(1)):   # a small vocabulary can leave a class without words
        member[k, rng.integers(V)] = True
    emit = np.zeros((K, V))
    for k in range(K):
        words = rng.permutation(np.flatnonzero(member[k]))
        emit[k, words] = 1.0 / np.arange(1, len(words) + 1)
    emit /= emit.sum(1, keepdims=True)
    f = lambda a: torch.tensor(a, dtype=torch.float64)
    return ClassHMM(f(np.full(K, 1.0 / K)), f(trans), f(emit), V, K, n_topics)
