"""The step radius of softmax cross-entropy: how far a step along a direction can go before the
loss's Taylor series stops converging.

Piyush Sao, "Ghosts of Softmax: Complex Singularities That Limit Safe Step Sizes in
Cross-Entropy", 2026, arXiv 2603.13552 (code: github.com/piyush314/ghosts-of-softmax).

Along a unit direction v the loss is a function of the step length t, l(t) = L(theta + t v). With
the logits linearised along v, z_k(t) = z_k + a_k t with a = J_z v (one Jacobian-vector product),

    l(t) = -z_y - a_y t + log F(t),      F(t) = sum_k exp(z_k + a_k t)                    (eq. 8)

log F is singular where F = 0. F > 0 on the real line, but it has complex zeros (the "ghosts"),
and by Cauchy-Hadamard the Taylor series of l about t = 0 converges exactly for |t| < rho*:

    rho*        = min{|t| : F(t) = 0}                                                      (eq. 9)
    binary      rho* = sqrt(delta^2 + pi^2) / |a_1 - a_2|,   delta = z_1 - z_2            (eq. 10, 13)
    lower bound rho* >= pi / Delta_a,   Delta_a = max_k a_k - min_k a_k                   (eq. 11, 12)
    batch bound rho_a = pi / max_x Delta_a(x)                                              (eq. 14)
    normalised step r = tau / rho_a                                                        (eq. 17)

logit_jvp, logit_spread and softmax_radius are the paper's computable bound (torch). The rest
check it: binary_radius is the closed form, partition_radius finds rho* numerically for any
number of classes, log_partition_taylor gives the Taylor coefficients of log F so that one can see
the series converge inside rho* and diverge outside it, and loss_along_line evaluates the true
(not linearised) loss and accuracy after steps of several lengths at once.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, jvp, vmap

__all__ = ["logit_jvp", "logit_spread", "softmax_radius", "binary_radius", "partition_radius",
           "log_partition_taylor", "taylor_partial_sums", "loss_along_line", "unit_direction",
           "random_direction"]


# ---------------------------------------------------------------- the computable bound (torch)

def unit_direction(tensors: dict) -> dict:
    """The dict of tensors scaled to unit total Euclidean norm (a step direction v)."""
    norm = torch.sqrt(sum((t.detach().double() ** 2).sum() for t in tensors.values()))
    if norm == 0:
        raise ValueError("the direction is zero")
    return {k: (t.detach() / norm).to(t.dtype) for k, t in tensors.items()}


def random_direction(params: dict, generator: torch.Generator) -> dict:
    """A uniformly random unit direction in parameter space (an isotropic Gaussian, normalised)."""
    return unit_direction({k: torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype)
                           for k, p in params.items()})


def logit_jvp(model: torch.nn.Module, params: dict, direction: dict, x: torch.Tensor):
    """(logits z, directional logit derivatives a = J_z v) at `params` (name -> tensor; the model's
    own buffers are used), both [N, C]. One forward-mode pass (torch.func.jvp), section 4.5."""
    names = list(direction)
    fixed = {k: v for k, v in params.items() if k not in direction}

    def logits(*moving):
        return functional_call(model, {**fixed, **dict(zip(names, moving))}, (x,))

    z, a = jvp(logits, tuple(params[k].detach() for k in names), tuple(direction[k] for k in names))
    return z.detach(), a.detach()


def logit_spread(a: torch.Tensor) -> torch.Tensor:
    """Delta_a(x; v) = max_k a_k - min_k a_k, per sample (eq. 11)."""
    return a.amax(-1) - a.amin(-1)


def softmax_radius(a: torch.Tensor) -> float:
    """rho_a = pi / max_x Delta_a(x; v) over the sample set (eq. 14); inf when no logit moves."""
    spread = float(logit_spread(a).max())
    return math.pi / spread if spread > 0 else math.inf


def binary_radius(margin, spread):
    """Exact radius of two-class cross-entropy along v: sqrt(delta^2 + pi^2) / |Delta| (eq. 10, 13),
    with delta the logit margin z_1 - z_2 and Delta = a_1 - a_2. Its nearest ghosts sit at
    t = (delta +- i pi) / Delta (Theorem 4.3)."""
    return np.sqrt(np.square(margin) + np.pi ** 2) / np.abs(spread)


# ---------------------------------------------------------------- the exact linearised radius (numpy)

def _terms(z, a, t):
    """exp(z_k + a_k t) / exp(max_k Re(z_k + a_k t)) for complex t [M], and the shift: [M, K], [M]."""
    e = z[None, :] + a[None, :] * t[:, None]
    shift = e.real.max(1)
    return np.exp(e - shift[:, None]), shift


def _zeros_inside(z, a, radius: float, points: int) -> int:
    """Zeros of F in |t| < radius, by the argument principle: the winding number of F around 0
    along the circle. `points` must resolve the phase: each step turns F by much less than pi."""
    t = radius * np.exp(2j * np.pi * np.arange(points) / points)
    terms, _ = _terms(z, a, t)
    phase = np.angle(terms.sum(1))
    turns = np.diff(np.concatenate([phase, phase[:1]]))
    turns = (turns + np.pi) % (2 * np.pi) - np.pi
    return int(round(turns.sum() / (2 * np.pi)))


def _newton_zeros(z, a, iters: int = 60):
    """Zeros of F reached by Newton's method from the two-class ghost of every pair of classes,
    t0 = (z_j - z_k + i pi) / (a_k - a_j) (eq. 13 applied to the pair): the upper half-plane ones."""
    j, k = np.triu_indices(len(z), 1)
    keep = a[j] != a[k]
    j, k = j[keep], k[keep]
    t = (z[j] - z[k] + 1j * np.pi) / (a[k] - a[j])
    for _ in range(iters):
        terms, _ = _terms(z, a, t)
        f, df = terms.sum(1), (terms * a[None, :]).sum(1)
        step = np.where(df != 0, f / np.where(df != 0, df, 1), 0)
        t = t - step
    terms, _ = _terms(z, a, t)
    converged = np.abs(terms.sum(1)) <= 1e-10 * np.abs(terms).sum(1)
    return t[converged & np.isfinite(t)]


def partition_radius(logits, slopes, rel_tol: float = 1e-10) -> np.ndarray:
    """rho*(x; v) = min{|t| : sum_k exp(z_k + a_k t) = 0} per sample (eq. 9): the exact convergence
    radius of the linearised line loss. logits, slopes: [C] or [N, C] (float64 numpy or tensors).

    Newton's method from each pair's two-class ghost proposes zeros; the argument principle then
    checks that no zero lies inside the nearest one found (else the radius is bisected with it,
    starting from the zero-free disk |t| < pi / Delta_a of Theorem 4.6)."""
    z = np.atleast_2d(np.asarray(torch.as_tensor(logits).double().cpu(), dtype=np.float64))
    a = np.atleast_2d(np.asarray(torch.as_tensor(slopes).double().cpu(), dtype=np.float64))
    out = np.empty(len(z))
    for i, (zi, ai) in enumerate(zip(z, a)):
        zi, ai = zi - zi.max(), ai - 0.5 * (ai.max() + ai.min())   # neither shift moves a zero
        spread = ai.max() - ai.min()
        if spread == 0:
            out[i] = np.inf
            continue
        points = lambda r: int(max(2 ** 14, 64 * np.ceil(spread * r)))
        zeros = _newton_zeros(zi, ai)
        best = float(np.abs(zeros).min()) if zeros.size else np.inf
        if np.isfinite(best) and _zeros_inside(zi, ai, best * (1 - 1e-3), points(best)) == 0:
            out[i] = best
            continue
        lo = np.pi / spread                                 # no zero inside (Theorem 4.6)
        hi = best * (1 - 1e-3) if np.isfinite(best) else 2 * lo
        while _zeros_inside(zi, ai, hi, points(hi)) == 0:
            lo, hi = hi, 2 * hi
        while hi - lo > rel_tol * hi:
            mid = 0.5 * (lo + hi)
            lo, hi = (lo, mid) if _zeros_inside(zi, ai, mid, points(mid)) else (mid, hi)
        out[i] = hi
    return out


def log_partition_taylor(logits, slopes, order: int) -> np.ndarray:
    """Taylor coefficients c_0..c_order of log F(t) = log sum_k exp(z_k + a_k t) about t = 0, for
    one sample (float64). The line loss l(t) shares them from c_2 on (eq. 8): its radius is theirs.

    With p = softmax(z) and a centred at its p-mean m, F(t) = F(0) e^{m t} sum_k p_k e^{(a_k - m) t};
    the series of that sum, f_n = sum_k p_k (a_k - m)^n / n!, gives log's by n l_n = n f_n -
    sum_{j<n} j l_j f_{n-j} (from (log f)' f = f'). Centring keeps the f_n small, which matters:
    the recursion loses digits when |a_k - m| t is large on the disk of interest."""
    z = np.asarray(torch.as_tensor(logits).double().cpu(), dtype=np.float64).ravel()
    a = np.asarray(torch.as_tensor(slopes).double().cpu(), dtype=np.float64).ravel()
    p = np.exp(z - z.max())
    log_f0 = z.max() + np.log(p.sum())
    p /= p.sum()
    m = float(p @ a)
    d = a - m
    f = np.empty(order + 1)
    term = p.copy()
    for n in range(order + 1):
        f[n] = term.sum()
        term = term * d / (n + 1)
    c = np.zeros(order + 1)
    for n in range(1, order + 1):
        j = np.arange(1, n)
        c[n] = f[n] - (j * c[1:n] * f[n - 1:0:-1]).sum() / n
    c[0] = log_f0
    c[1] += m
    return c


def taylor_partial_sums(coeffs, t) -> np.ndarray:
    """S_N(t) = sum_{n<=N} c_n t^n for N = 0..len(coeffs)-1, at a real or complex t."""
    coeffs = np.asarray(coeffs)
    return np.cumsum(coeffs * np.power(complex(t) if np.iscomplexobj(t) else float(t), np.arange(len(coeffs))))


# ---------------------------------------------------------------- the true loss after a step

@torch.no_grad()
def loss_along_line(model: torch.nn.Module, params: dict, direction: dict, taus, x: torch.Tensor,
                    y: torch.Tensor, temperature: float = 1.0, chunk: int = 16):
    """Mean cross-entropy of logits / temperature, and accuracy, at theta + tau v for every tau:
    two tensors [len(taus)]. The steps are batched with torch.func.vmap, `chunk` at a time; the
    model should be in eval mode (batch statistics would mix the steps' samples otherwise)."""
    taus = torch.as_tensor(taus, dtype=x.dtype if x.is_floating_point() else torch.float32,
                           device=next(iter(params.values())).device)
    fixed = {k: v for k, v in params.items() if k not in direction}

    def one(tau):
        moved = {k: params[k].detach() + tau * direction[k] for k in direction}
        z = functional_call(model, {**fixed, **moved}, (x,)) / temperature
        return F.cross_entropy(z.float(), y), (z.argmax(-1) == y).float().mean()

    losses, accs = zip(*(vmap(one)(taus[i:i + chunk]) for i in range(0, len(taus), chunk)))
    return torch.cat(losses), torch.cat(accs)
