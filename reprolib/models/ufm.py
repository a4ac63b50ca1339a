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
           "central_path_flow", "vicinity_minimizer", "collapsed_minimizer", "perturbation_operator",
           "perturbation_operator_large_beta", "theorem42_singular_values", "within_class_attenuation"]


def targets(K: int, n: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """Y = I_K (x) 1_n^T  [K, K n]."""
    return torch.eye(K, dtype=dtype, device=device).repeat_interleave(n, dim=1)


def optimal_classifier(H: torch.Tensor, Y: torch.Tensor, lam_W: float, n: int) -> torch.Tensor:
    """W*(H) = Y H^T (H H^T + n lam_W I_d)^{-1}: the minimizer of eq. 2 over W (Section 3)."""
    d = H.shape[0]
    A = H @ H.T + n * lam_W * torch.eye(d, dtype=H.dtype, device=H.device)
    return torch.linalg.solve(A, H @ Y.T).T      # A is symmetric


def objective(W, H, H0, Y, lam_W: float, lam_H: float, beta: float) -> torch.Tensor:
    """f(W, H; H0), eq. 2 (eq. 1 when beta = 0)."""
    N, K = H.shape[1], Y.shape[0]
    f = (W @ H - Y).square().sum() / (2 * N) + lam_W / (2 * K) * W.square().sum() + lam_H / (2 * N) * H.square().sum()
    return f + beta / (2 * N) * (H - H0).square().sum() if beta else f


def reduced_loss(H, Y, lam_W: float, lam_H: float, n: int) -> torch.Tensor:
    """L(H) = f(W*(H), H) without the beta term (Section 3)."""
    return objective(optimal_classifier(H, Y, lam_W, n), H, None, Y, lam_W, lam_H, 0.0)


def central_path_velocity(H, Y, lam_W: float, lam_H: float, n: int) -> torch.Tensor:
    """dH/dt = -N grad L(H) = -(W*^T (W* H - Y) + lam_H H), eq. 4."""
    W = optimal_classifier(H, Y, lam_W, n)
    return -(W.T @ (W @ H - Y) + lam_H * H)


def central_path_flow(H0, Y, lam_W: float, lam_H: float, n: int, dt: float, steps: int,
                      record_every: int = 1, record=None):
    """Integrate eq. 4 from H0 with classical 4th-order Runge-Kutta steps of size dt.
    Returns (times, records): record(H) (default: H itself) at t = 0 and every `record_every` steps."""
    v = lambda X: central_path_velocity(X, Y, lam_W, lam_H, n)
    record = record or (lambda X: X.clone())
    H, times, records = H0, [0.0], [record(H0)]
    for step in range(1, steps + 1):
        k1 = v(H)
        k2 = v(H + dt / 2 * k1)
        k3 = v(H + dt / 2 * k2)
        k4 = v(H + dt * k3)
        H = H + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        if step % record_every == 0 or step == steps:
            times.append(step * dt)
            records.append(record(H))
    return times, records


def vicinity_minimizer(H0, Y, lam_W: float, lam_H: float, beta: float, n: int, tol: float = 1e-13,
                       max_iter: int = 10_000):
    """A minimizer of eq. 2 by exact alternating minimization from H = H0: the W-step is W*(H); the
    H-step solves grad_H f = 0, (W^T W + (lam_H + beta) I) H = W^T Y + beta H0. f never increases.
    Stops when ||H_new - H|| <= tol ||H||. Returns (W, H, info): info has the iterations and the
    gradient norm ||(grad_W f, grad_H f)|| at the returned point (eq. 2's scaling)."""
    d, N, K = H0.shape[0], H0.shape[1], Y.shape[0]
    eye = torch.eye(d, dtype=H0.dtype, device=H0.device)
    H = H0
    for it in range(1, max_iter + 1):
        W = optimal_classifier(H, Y, lam_W, n)
        H_new = torch.linalg.solve(W.T @ W + (lam_H + beta) * eye, W.T @ Y + beta * H0)
        change = float(torch.linalg.matrix_norm(H_new - H) / torch.linalg.matrix_norm(H).clamp_min(1e-300))
        H = H_new
        if change <= tol:
            break
    W = optimal_classifier(H, Y, lam_W, n)
    grad_W = (W @ H - Y) @ H.T / N + lam_W / K * W
    grad_H = (W.T @ (W @ H - Y) + lam_H * H + beta * (H - H0)) / N
    grad = math.sqrt(float(grad_W.square().sum() + grad_H.square().sum()))
    return W, H, dict(iterations=it, grad_norm=grad, change=change)


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
