"""The unconstrained features model (UFM) with features kept near an input features matrix:
Tirer, Huang & Niles-Weed, "Perturbation Analysis of Neural Collapse", ICML 2023, arXiv 2210.16658.

K classes, n samples each, N = K n. Features H in R^{d x N} (columns class-major: class 1's n
samples first), one-hot targets Y = I_K (x) 1_n^T, last layer W in R^{K x d}, an input features
matrix H0 (e.g. a shallower layer's features). The model (eq. 2):

    f(W, H; H0) = 1/(2N) ||W H - Y||_F^2 + lam_W/(2K) ||W||_F^2 + lam_H/(2N) ||H||_F^2
                  + beta/(2N) ||H - H0||_F^2

beta = 0 is the plain UFM (eq. 1, Tirer & Bruna 2022); a large beta keeps H near H0. For fixed H the
best W is ridge regression (Section 3), W*(H) = Y H^T (H H^T + n lam_W I_d)^{-1}, and
L(H) = f(W*(H), H; .) without the beta term. The "central path" flow (eq. 4) is
dH/dt = -N grad L(H) = -(W*^T (W* H - Y) + lam_H H) (grad_W f = 0 at W*, so W*'s own change drops
out); Theorem 3.1: along it Tr(Sigma_W)/Tr(Sigma_B) strictly decreases, e^{2 lam_H t} Tr(Sigma_W)
decreases and e^{2 lam_H t} Tr(Sigma_B) strictly increases.

Near collapse (Section 4): with H0 = H* + dH0, H* a collapsed minimizer of eq. 1 (Theorem 2.1), the
minimizer moves by vec(dH) = F vec(dH0) to first order (Theorem 4.1); for large beta F is eq. 5,
whose K x K blocks of size dn x dn have the singular values of Theorem 4.2.

Matrices follow the paper's layout (features are columns); vec() stacks columns.
"""
import math

import torch

__all__ = ["targets", "optimal_classifier", "reduced_loss", "objective", "central_path_velocity",
           "central_path_flow", "features_given_classifier", "vicinity_minimizer", "collapsed_minimizer",
           "perturbation_operator", "perturbation_operator_large_beta", "theorem42_singular_values",
           "within_class_attenuation"]


def targets(K: int, n: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """Y = I_K (x) 1_n^T  [K, K n]."""
    return torch.eye(K, dtype=dtype, device=device).repeat_interleave(n, dim=1)


def optimal_classifier(H: torch.Tensor, Y: torch.Tensor, lam_W: float, n: int) -> torch.Tensor:
    """W*(H) = Y H^T (H H^T + n lam_W I_d)^{-1}: the minimizer of eq. 2 over W (Section 3)."""
    d = H.shape[-2]
    A = H @ H.mT + n * lam_W * torch.eye(d, dtype=H.dtype, device=H.device)
    return torch.linalg.solve(A, H @ Y.mT).mT    # A is symmetric


def objective(W, H, H0, Y, lam_W: float, lam_H: float, beta: float) -> torch.Tensor:
    """f(W, H; H0), eq. 2 (eq. 1 when beta = 0)."""
    N, K = H.shape[1], Y.shape[0]
    f = ((W @ H - Y).square().sum() / (2 * N) + lam_W / (2 * K) * W.square().sum()
         + lam_H / (2 * N) * H.square().sum())
    return f + beta / (2 * N) * (H - H0).square().sum() if beta else f


def reduced_loss(H, Y, lam_W: float, lam_H: float, n: int) -> torch.Tensor:
    """L(H) = f(W*(H), H) without the beta term (Section 3)."""
    return objective(optimal_classifier(H, Y, lam_W, n), H, None, Y, lam_W, lam_H, 0.0)


def central_path_velocity(H, Y, lam_W: float, lam_H: float, n: int) -> torch.Tensor:
    """dH/dt = -N grad L(H) = -(W*^T (W* H - Y) + lam_H H), eq. 4."""
    W = optimal_classifier(H, Y, lam_W, n)
    return -(W.mT @ (W @ H - Y) + lam_H * H)


def central_path_flow(H0, Y, lam_W: float, lam_H: float, n: int, dt: float, steps: int,
                      record_every: int = 1, record=None):
    """Integrate eq. 4 from H0 with classical 4th-order Runge-Kutta steps of size
    h = min(dt, 1 / (||W*(H)||_2^2 + lam_H)): the velocity's Jacobian contains -(I (x) W*^T W* + lam_H I),
    whose norm ||W*||^2 + lam_H can reach 1/(4 lam_W) + lam_H where H has directions of little energy
    (||W*||_2 <= ||Y||_2 / (2 sqrt(n lam_W))), and h times it must stay inside RK4's stability interval
    (about 2.8 on the negative real axis).
    Returns (times, records): record(H) (default: H itself) at t = 0 and every `record_every` steps.
    H0 may carry leading batch dimensions [..., d, N]: independent flows, integrated together with the
    step of the stiffest."""
    v = lambda X: central_path_velocity(X, Y, lam_W, lam_H, n)
    record = record or (lambda X: X.clone())
    H, t, times, records = H0, 0.0, [0.0], [record(H0)]
    for step in range(1, steps + 1):
        W = optimal_classifier(H, Y, lam_W, n)
        h = min(dt, 1.0 / (float(torch.linalg.matrix_norm(W, 2).max()) ** 2 + lam_H))
        k1 = -(W.mT @ (W @ H - Y) + lam_H * H)          # = v(H), reusing W*(H)
        k2 = v(H + h / 2 * k1)
        k3 = v(H + h / 2 * k2)
        k4 = v(H + h * k3)
        H, t = H + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4), t + h
        if step % record_every == 0 or step == steps:
            times.append(t)
            records.append(record(H))
    return times, records


def features_given_classifier(W, H0, Y, lam_H: float, beta: float) -> torch.Tensor:
    """argmin_H f(W, H; H0) = (W^T W + c I)^{-1} (W^T Y + beta H0), c = lam_H + beta (grad_H f = 0), by
    Woodbury: (W^T W + c I)^{-1} = (I - W^T (c I_K + W W^T)^{-1} W) / c, so only K x K systems are solved."""
    c = lam_H + beta
    B = W.T @ Y + beta * H0
    small = c * torch.eye(W.shape[0], dtype=W.dtype, device=W.device) + W @ W.T       # K x K
    return (B - W.T @ torch.linalg.solve(small, W @ B)) / c


def vicinity_minimizer(H0, Y, lam_W: float, lam_H: float, beta: float, n: int, tol: float = 1e-11,
                       max_iter: int = 5000, patience: int = 20):
    """A minimizer of eq. 2 by exact alternating minimization from (W*(H0), H0): the W-step is W*(H), the
    H-step features_given_classifier(W). f never increases. Stops when the gradient norm
    ||(grad_W f, grad_H f)|| falls to tol times its value at the start, or has not reached a new low for
    `patience` iterations (rounding: a small start gradient cannot fall 1e-11-fold in float64).
    Returns (W, H, info): info has the iterations and the gradient norm at the returned point and at
    the start.

    Convergence is fast when eq. 2 is convex near the solution. Directions that H0 leaves (nearly)
    empty, such as dead ReLU units, make it non-convex unless beta is large against 1/lam_W: there
    the minimizer grows a small collapsed structure of its own (eq. 1's solution in that subspace), and
    the iteration leaves that saddle only slowly."""
    N, K = H0.shape[1], Y.shape[0]

    def grad_norm(W, H):
        grad_W = (W @ H - Y) @ H.T / N + lam_W / K * W
        grad_H = (W.T @ (W @ H - Y) + lam_H * H + beta * (H - H0)) / N
        return math.sqrt(float(grad_W.square().sum() + grad_H.square().sum()))

    H = H0
    W = optimal_classifier(H, Y, lam_W, n)
    start = now = best = grad_norm(W, H)
    it = since_best = 0
    while now > tol * start and it < max_iter and since_best < patience:
        it += 1
        H = features_given_classifier(W, H0, Y, lam_H, beta)
        W = optimal_classifier(H, Y, lam_W, n)
        now = grad_norm(W, H)
        best, since_best = (now, 0) if now < best else (best, since_best + 1)
    return W, H, dict(iterations=it, grad_norm=now, grad_norm_start=start)


def collapsed_minimizer(R: torch.Tensor, n: int, lam_W: float, lam_H: float):
    """Theorem 2.1's minimizer of eq. 1 for any R [d, K] with R^T R = I_K (needs lam_W lam_H < 1):
    H* = sqrt(rho) R (x) 1_n^T, W* = sqrt(lam_H / lam_W) sqrt(rho) R^T,
    rho = (1 - sqrt(lam_H lam_W)) sqrt(lam_W / lam_H). Returns (W*, H*)."""
    c = math.sqrt(lam_H * lam_W)
    if c >= 1:
        raise ValueError(f"lam_W * lam_H = {c * c:g} >= 1: the minimizer of eq. 1 is (0, 0)")
    rho = (1 - c) * math.sqrt(lam_W / lam_H)
    Hbar = math.sqrt(rho) * R
    return math.sqrt(lam_H / lam_W) * Hbar.T, Hbar.repeat_interleave(n, dim=1)


def _vec(A: torch.Tensor) -> torch.Tensor:
    return A.T.reshape(-1)        # column stacking


def perturbation_operator(W, H, H0, Y, lam_W: float, lam_H: float, beta: float) -> torch.Tensor:
    """F [dN, dN] with vec(dH) = F vec(dH0) to first order at a minimizer (W, H) of f(.; H0): the
    first display of Theorem 4.1, (beta/N) (f_HH - f_HW f_WW^{-1} f_WH)^{-1}, with the Hessian blocks
    of eq. 2 taken exactly by autograd (this is the implicit-function theorem; no large-beta step)."""
    K, d = W.shape
    N = H.shape[1]

    def f(v):
        return objective(v[:K * d].reshape(d, K).T, v[K * d:].reshape(N, d).T, H0, Y, lam_W, lam_H, beta)

    hess = torch.func.hessian(f)(torch.cat([_vec(W), _vec(H)]).detach())
    f_WW, f_WH, f_HH = hess[:K * d, :K * d], hess[:K * d, K * d:], hess[K * d:, K * d:]
    schur = f_HH - f_WH.T @ torch.linalg.solve(f_WW, f_WH)
    return beta / N * torch.linalg.inv(schur)


def perturbation_operator_large_beta(W, H, Y, lam_W: float, lam_H: float, beta: float, n: int) -> torch.Tensor:
    """Eq. 5 (beta >> max(1, lam_H)):
    F = (1 - lam_H/beta) I - (1/beta) I_N (x) W^T W + (1/beta) Z,
    Z = (E^T + H (x) W)^T (H H^T (x) I_K + n lam_W I_dK)^{-1} (E^T + H (x) W),
    E = [vec(e_{d,i} e_{K,k}^T (W H - Y))], columns ordered i = 1..d outer, k = 1..K inner (vec(W)'s order)."""
    K, d = W.shape
    N = H.shape[1]
    eye = lambda m: torch.eye(m, dtype=H.dtype, device=H.device)
    resid = W @ H - Y                                                     # [K, N]
    # column (i, k) of E is vec(e_i e_k^T resid): row i of that d x N matrix is resid[k], the rest 0
    E = torch.zeros(d, K, d, N, dtype=H.dtype, device=H.device)
    idx = torch.arange(d, device=H.device)
    E[idx, :, idx, :] = resid
    E = E.permute(3, 2, 0, 1).reshape(N * d, d * K)                      # rows vec(.) index (j, i), cols (i, k)
    A = E.T + torch.kron(H, W)                                            # [dK, dN]
    Z = A.T @ torch.linalg.solve(torch.kron(H @ H.T, eye(K)) + n * lam_W * eye(d * K), A)
    return (1 - lam_H / beta) * eye(d * N) - torch.kron(eye(N), W.T @ W) / beta + Z / beta


def theorem42_singular_values(lam_W: float, lam_H: float, beta: float) -> dict:
    """Theorem 4.2 at a collapsed H0 (d > K, lam_W lam_H < 1): sigma_max(F_kk) = 1,
    sigma_min(F_kk) = 1 - sqrt(lam_H/lam_W)/beta, sigma_max(F_kk') = 2 lam_H (1 - sqrt(lam_H lam_W))/beta
    (F_kk' is rank one)."""
    return dict(intra_max=1.0, intra_min=1 - math.sqrt(lam_H / lam_W) / beta,
                inter_max=2 * lam_H * (1 - math.sqrt(lam_H * lam_W)) / beta)


def within_class_attenuation(lam_W: float, lam_H: float, beta: float) -> tuple[float, float]:
    """How the minimizer scales a small within-class perturbation (zero mean in every class) of a
    collapsed H0 = H*, to first order in the perturbation and exactly in beta: (a_span, a_perp).

    Derived here from Theorem 4.1: f_WH applied to a within-class dH vanishes (H* and W H* - Y are
    constant within each class), so such perturbations see only f_HH = (I_N (x) W*^T W* +
    (lam_H + beta) I)/N, and W*^T W* = (sqrt(lam_H/lam_W) - lam_H) P with P the projector onto the
    class means' span (Theorem 2.1). Components inside that K-dim span scale by
    a_span = beta / (beta + sqrt(lam_H/lam_W)), the other d - K directions by a_perp = beta / (beta + lam_H).
    To first order in 1/beta, a_span is Theorem 4.2's sigma_min(F_kk)."""
    return beta / (beta + math.sqrt(lam_H / lam_W)), beta / (beta + lam_H)
