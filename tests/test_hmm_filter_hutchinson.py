"""The HMM forward filter against brute-force enumeration of the hidden paths, and Hutchinson's trace
against exact Hessians (a diagonal quadratic, where Rademacher probes are exact, and a small GPT)."""
import itertools
import math

import torch

from reprolib.data.class_hmm import class_hmm
from reprolib.data.hmm_filter import forward_filter, sample_fast
from reprolib.metrics.hutchinson import hutchinson_trace




def test_sample_fast_draws_what_sample_draws():
    """The same tensors as ClassHMM.sample from the same generator, and the generator left in the same state."""
    cases = [(class_hmm(vocab_size=64, n_classes=16, n_topics=1, classes_per_word=4, successors=3, topic_mix=0.0), 64, 65),
             (class_hmm(vocab_size=16, n_classes=4, n_topics=1, classes_per_word=2, successors=3, topic_mix=0.0), 8, 17),
             (class_hmm(vocab_size=50, n_classes=8, n_topics=3, classes_per_word=2, successors=4, seed=1), 33, 20)]
    for hmm, n, T in cases:
        for length in (1, 2, 3, T):
            g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
            for _ in range(3):
                for a, b in zip(hmm.sample(n, length, g1), sample_fast(hmm, n, length, g2)):
                    assert torch.equal(a, b)
            assert torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))


def test_forward_filter_matches_enumeration():
    hmm = class_hmm(vocab_size=5, n_classes=3, n_topics=1, classes_per_word=2, successors=2, topic_mix=0.0, seed=3)
    w, _, _ = hmm.sample(4, 5, torch.Generator().manual_seed(0))
    nll, post = forward_filter(hmm, w)
    A, B, pi = hmm.trans[0], hmm.emit, hmm.start
    for i in range(4):
        for T in range(1, 6):
            # p(w_1..w_T, c_T = k) by enumerating the T-step paths
            joint = torch.zeros(3, dtype=torch.float64)
            for path in itertools.product(range(3), repeat=T):
                p = pi[path[0]] * B[path[0], w[i, 0]]
                for t in range(1, T):
                    p = p * A[path[t - 1], path[t]] * B[path[t], w[i, t]]
                joint[path[-1]] += p
            torch.testing.assert_close(post[i, T - 1], joint / joint.sum())
            torch.testing.assert_close(nll[i, :T].sum(), -joint.sum().log())


def test_hutchinson_is_exact_for_a_diagonal_quadratic_and_unbiased_for_a_gpt():
    d = torch.tensor([1.0, -2.0, 3.5, 0.25], dtype=torch.float64)
    x = torch.randn(4, dtype=torch.float64, requires_grad=True)
    out = hutchinson_trace([lambda: 0.5 * (d * x * x).sum()], [x], 5, torch.Generator().manual_seed(0))
    assert math.isclose(out["trace"], float(d.sum()), rel_tol=1e-12) and out["se"] == 0

    from reprolib.models import GPT, GPTConfig
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=5, seq_len=4, n_layer=1, d_model=4, n_head=1, mlp_hidden=8)).double()
    xb = torch.randint(0, 5, (3, 4), generator=torch.Generator().manual_seed(1))
    yb = torch.randint(0, 5, (3, 4), generator=torch.Generator().manual_seed(2))
    params = list(model.parameters())
    flat = torch.cat([p.detach().flatten() for p in params])

    def loss_of(vec):
        chunks, i = {}, 0
        for (name, p) in model.named_parameters():
            chunks[name] = vec[i:i + p.numel()].view_as(p)
            i += p.numel()
        return torch.func.functional_call(model, chunks, (xb, yb))[1]

    from torch.nn.attention import SDPBackend, sdpa_kernel
    with sdpa_kernel([SDPBackend.MATH]):   # the fused attention kernels have no double backward
        hess = torch.autograd.functional.hessian(loss_of, flat)
    exact = float(hess.diagonal().sum())
    est = hutchinson_trace([lambda: model(xb, yb)[1]], params, 100, torch.Generator().manual_seed(3))
    assert abs(est["trace"] - exact) < 4 * est["se"], (est["trace"], exact, est["se"])
    # every round is exactly z^T H z for the Rademacher z it drew
    g = torch.Generator().manual_seed(3)
    for r in est["rounds"][:5]:
        z = torch.cat([(torch.randint(0, 2, p.shape, generator=g).double() * 2 - 1).flatten() for p in params])
        assert math.isclose(r, float(z @ hess @ z), rel_tol=1e-6)
