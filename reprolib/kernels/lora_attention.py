"""The LoRA gradient of one attention head: exact, and through chained low-rank factors.

"Computational Limits of Low-Rank Adaptation (LoRA) Fine-Tuning for Transformer Models", Hu, Su, Kuo,
Song, Liu (ICLR 2025), https://arxiv.org/abs/2406.03136 (code on OpenReview as supplementary material).
The polynomial method is Alman & Song, "Fast Attention Requires Bounded Entries" (NeurIPS 2023),
https://arxiv.org/abs/2302.13214.

The head (the paper's Sec. 2-4; library convention y = x W^T, LoRA as reprolib.layers.LoRALinear):
    Q = X W_Q^T, K = X W_K^T, V = X W_V^T,  W = W* + s B A  (s = alpha / r) for each adapted W,
    S = tau Q K^T  (tau = 1/d, Alman-Song's normalisation: |S_ij| <= Gamma^2 when the entries of Q
                    and K are at most Gamma),
    P = D^{-1} exp(S),  D = diag(exp(S) 1),  loss = 1/2 ||P V - Y||_F^2.
Its gradient (G = P V - Y, delta_i = <G_i, (P V)_i>):
    dV = P^T G,   dS = P o (G V^T) - diag(delta) P,   dQ = tau dS K,   dK = tau dS^T Q,
    dW = dQ^T X,  dB = s dW A^T,  dA = s B^T dW                                   (chain rule)
Every L x L object is P. If exp(S) ~ U F^T with k columns (the paper's Lemma 3.3 via the polynomial
method), each term factors (the paper's "chained low-rank approximations", Lemmas 3.4-3.5):
    D ~ diag(U (F^T 1)),  P V ~ D^{-1} U (F^T V),  P^T G ~ F (U^T D^{-1} G),
    P o (G V^T) has rank k d (a Hadamard product of rank-k and rank-d matrices), so
    [(P o G V^T) K]_i  = sum_a G_ia sum_m (U/D)_im M[m, a, :],  M = sum_j F_jm V_ja K_jb,
    [(P o G V^T)^T Q]_j = sum_a V_ja sum_m F_jm M'[m, a, :],   M' = sum_i (U/D)_im G_ia Q_ib,
all in O(L k d^2) time and memory, never forming an L x L matrix.

Taylor features (the polynomial method with the degree-g Taylor polynomial of exp): for multi-indices
alpha with |alpha| <= g, phi(x)_alpha = x^alpha / sqrt(alpha!), so that
    phi(q) . phi(k) = sum_{j<=g} (q . k)^j / j!        (multinomial theorem)
with C(d + g, g) features.
"""
import itertools
import math
from typing import Callable

import torch
from torch import Tensor, nn

Factorize = Callable[[Tensor, Tensor, float], tuple[Tensor, Tensor]]


def taylor_rank(d: int, degree: int) -> int:
    """Number of Taylor features: multi-indices of d variables with |alpha| <= degree, C(d + g, g)."""
    return math.comb(d + degree, degree)


def taylor_features(x: Tensor, degree: int) -> Tensor:
    """phi(x) [..., C(d + g, g)] with phi(q) . phi(k) = sum_{j <= g} (q . k)^j / j! (module docstring)."""
    d = x.shape[-1]
    cols = [torch.ones_like(x[..., :1])]
    for j in range(1, degree + 1):
        combos = list(itertools.combinations_with_replacement(range(d), j))
        idx = torch.tensor(combos, device=x.device)                        # [n_j, j]: the factors of x^alpha
        norm = torch.tensor([math.prod(math.factorial(c.count(i)) for i in set(c)) for c in combos],
                            dtype=x.dtype, device=x.device)                 # alpha!
        cols.append(x[..., idx].prod(-1) / norm.sqrt())
    return torch.cat(cols, -1)


def taylor_factors(degree: int) -> Factorize:
    """exp(tau Q K^T) ~ phi(sqrt(tau) Q) phi(sqrt(tau) K)^T, the degree-g Taylor polynomial of exp."""
    def factorize(Q, K, tau):
        return taylor_features(Q * math.sqrt(tau), degree), taylor_features(K * math.sqrt(tau), degree)
    return factorize


def attention_svd(Q: Tensor, K: Tensor, tau: float):
    """(U, sigma, P) for the attention matrix P = D^{-1} exp(tau Q K^T): its left singular vectors and
    singular values, descending, from the symmetric eigendecomposition P P^T = U diag(sigma^2) U^T
    (several times faster than an SVD on a GPU; singular values below ~1e-8 sigma_1 are not resolved,
    which the rank-k approximations used here never need), and P itself. Forms the L x L matrix."""
    P = torch.softmax(tau * Q @ K.T, -1)
    lam, U = torch.linalg.eigh(P @ P.T)
    return U.flip(-1), lam.flip(-1).clamp_min(0).sqrt(), P


def svd_factors(rank: int, svd: tuple | None = None) -> Factorize:
    """The best rank-k approximation (Eckart-Young, Frobenius) of the attention matrix
    P = D^{-1} exp(tau Q K^T) itself, U_k (P^T U_k)^T = U_k U_k^T P with U_k its top-k left singular
    vectors: any low-rank method's best case for P. The chain renormalises the rows of U F^T, which
    changes little where P is well approximated. `svd`: a precomputed attention_svd(Q, K, tau) of the
    same head. A reference, not a fast path."""
    def factorize(Q, K, tau):
        U, _, P = svd if svd is not None else attention_svd(Q, K, tau)
        return U[:, :rank], P.T @ U[:, :rank]
    return factorize


def scale_to_entry_bound(layer: nn.Module, X: Tensor, bound: float) -> float:
    """Rescale a projection in place (W* and, for LoRALinear, B: so W* + s B A scales as a whole) so
    that max_ij |(X W^T)_ij| = bound, the paper's norm on the products of X, W* and s B A; returns
    the factor."""
    gamma = bound / float((X @ adapted_weight(layer).T).abs().max())
    with torch.no_grad():
        layer.weight.mul_(gamma)
        if hasattr(layer, "delta_weight"):
            layer.B.mul_(gamma)
    return gamma


def adapted_weight(layer: nn.Module) -> Tensor:
    """W* + s B A for a LoRALinear (R None), W* for a plain nn.Linear; detached."""
    W = layer.weight.detach()
    return W + layer.delta_weight().detach() if hasattr(layer, "delta_weight") else W


def attention_loss(Q: Tensor, K: Tensor, V: Tensor, Y: Tensor, tau: float) -> Tensor:
    """1/2 ||softmax(tau Q K^T) V - Y||_F^2: the explicit O(L^2 d) forward, for autograd."""
    return 0.5 * ((torch.softmax(tau * Q @ K.T, -1) @ V - Y) ** 2).sum()


def _explicit_head_grads(Q, K, V, Y, tau, A=None):
    """The formulas of the module docstring with P formed: exp(S) (A None) or a given kernel matrix A."""
    P = torch.softmax(tau * Q @ K.T, -1) if A is None else A / A.sum(-1, keepdim=True)
    PV = P @ V
    G = PV - Y
    delta = (G * PV).sum(-1, keepdim=True)
    dS = P * (G @ V.T) - delta * P
    return 0.5 * (G ** 2).sum(), tau * dS @ K, tau * dS.T @ Q, P.T @ G


def _chained_head_grads(Q, K, V, Y, tau, U, F):
    L, d = Q.shape
    k = U.shape[1]
    n = U @ F.sum(0)                                       # D = diag(U F^T 1)
    Un = U / n[:, None]                                    # D^{-1} U: P ~ Un F^T
    PV = Un @ (F.T @ V)
    G = PV - Y
    delta = (G * PV).sum(-1, keepdim=True)
    M = torch.einsum("jm,ja,jb->mab", F, V, K).reshape(k, d * d)
    dQ = torch.einsum("ia,iab->ib", G, (Un @ M).view(L, d, d)) - delta * (Un @ (F.T @ K))
    M2 = torch.einsum("im,ia,ib->mab", Un, G, Q).reshape(k, d * d)
    dK = torch.einsum("ja,jab->jb", V, (F @ M2).view(L, d, d)) - F @ (Un.T @ (delta * Q))
    dV = F @ (Un.T @ G)
    return 0.5 * (G ** 2).sum(), tau * dQ, tau * dK, dV


def lora_attention_grads(X: Tensor, Y: Tensor, q: nn.Module, k: nn.Module, v: nn.Module, tau: float,
                         factorize: Factorize | None = None, explicit: bool = False) -> dict:
    """The loss and the gradient of the head (module docstring) w.r.t. every adapter factor of the
    q, k, v projections (LoRALinear with R None; a plain nn.Linear is frozen and gets none).
    factorize None: exact, O(L^2 d). Otherwise exp(S) ~ U F^T from factorize(Q, K, tau) and the
    chained low-rank path, O(L k d^2); explicit=True forms U F^T and uses the O(L^2 d) formulas instead
    (the check that the chain computes the same numbers). Returns dict(loss, grads={"q.A": ..., "q.B": ..., ...}, dQ, dK, dV)."""
    Wq, Wk, Wv = adapted_weight(q), adapted_weight(k), adapted_weight(v)
    Q, K, V = X @ Wq.T, X @ Wk.T, X @ Wv.T
    if factorize is None:
        loss, dQ, dK, dV = _explicit_head_grads(Q, K, V, Y, tau)
    else:
        U, F = factorize(Q, K, tau)
        loss, dQ, dK, dV = (_explicit_head_grads(Q, K, V, Y, tau, U @ F.T) if explicit
                            else _chained_head_grads(Q, K, V, Y, tau, U, F))
    grads = {}
    for name, layer, dOut in (("q", q, dQ), ("k", k, dK), ("v", v, dV)):
        if hasattr(layer, "delta_weight") and layer.R is None:
            dW = dOut.T @ X                                   # d loss / d W (out x in)
            grads[f"{name}.B"] = layer.scale * dW @ layer.A.detach().T
            grads[f"{name}.A"] = layer.scale * layer.B.detach().T @ dW
    return dict(loss=loss, grads=grads, dQ=dQ, dK=dK, dV=dV)


def relative_error(approx: dict, exact: dict) -> float:
    """||g~ - g||_F / ||g||_F over all adapter gradients together (dicts of lora_attention_grads)."""
    keys = sorted(exact)
    num = sum(((approx[n] - exact[n]) ** 2).sum() for n in keys)
    den = sum((exact[n] ** 2).sum() for n in keys)
    return float((num / den).sqrt())


def head_flops(L: int, d: int, k: int | None = None) -> int:
    """Multiply-adds x 2 of one gradient (forward and backward of the head, adapter factors excluded):
    exact (k None): the 6 L x L x d products of _explicit_head_grads; chained: its O(L k d^2) products.
    A count of the code's products, not of the elementwise work."""
    if k is None:
        return 2 * 6 * L * L * d
    return 2 * (4 * L * k * d * d + 8 * L * k * d)


def budget_rank(L: int, d: int, share: float = 0.5) -> int:
    """The largest k whose chained gradient costs at most `share` of the exact one's FLOPs (head_flops)."""
    k = 0
    while head_flops(L, d, k + 1) <= share * head_flops(L, d):
        k += 1
    return k


def taylor_degree(d: int, max_rank: int) -> int:
    """The largest Taylor degree g with C(d + g, g) <= max_rank (0 if none)."""
    g = 0
    while taylor_rank(d, g + 1) <= max_rank:
        g += 1
    return g
