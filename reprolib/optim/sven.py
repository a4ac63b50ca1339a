"""Sven: a step by the truncated pseudo-inverse of the Jacobian of per-sample residuals.

Bright-Thonney, Harvey, Lukas & Thaler, "Sven: Singular Value Descent as a Computationally
Efficient Natural Gradient Method", arXiv 2604.01279; code https://github.com/sambt/sven
(sven/opt/sven.py, sven/opt/pinv.py, sven/nn/sven_wrapper.py).

Each of the B residuals of a mini-batch is a condition R_a(theta) = 0. Linearising,
R(theta + d) ~ R + J d with J = dR/dtheta (B x P); the least-squares, minimum-norm d is -J^+ R:

    J ~ U_k S_k V_k^T                   (top-k singular triplets; s <= rcond * s_max dropped)
    theta <- theta - eta * V_k S_k^{-1} U_k^T R

No damping, no per-condition weights, no momentum (the code has optional RMSProp, off by
default). Residuals are whatever residual_fn returns: f(x) - y for regression (the paper's L2
form, its kappa = 1), or the per-sample losses themselves (kappa = 2, the code's default; any
per-sample loss l_a enters as R_a = l_a ** (kappa / 2)). Conditions of different kinds, e.g. a
PINN's interior and boundary residuals, are simply concatenated.

rcond = 1e-3 is the code's default (README, example notebook). Smaller values admit directions
with tiny s, whose 1/s steps are huge: on a tanh MLP fit (tests) rcond = 1e-6 diverged where
1e-3 converged.

The SVD comes from the eigendecomposition of the smaller Gram matrix: J J^T (B x B) when
B <= P, with V S^{-1} U^T R = J^T U S^{-2} U^T R; otherwise J^T J (P x P), with
V S^{-2} V^T J^T R (the code's default is an SVD of J itself). The Gram matrix squares the
condition number, so it is formed and decomposed in float64: that resolves s / s_max down to
about 1e-8; smaller singular values are lost in rounding (take rcond >= 1e-7).
"""
import torch
from torch import Tensor
from torch.func import functional_call, jacrev


def truncated_pinv_solve(J: Tensor, r: Tensor, k: int | None = None, rcond: float = 1e-3) -> Tensor:
    """V_k S_k^{-1} U_k^T r for J (B x P), r (B,), in float64: the rank-k pseudo-inverse applied to r."""
    J, r = J.double(), r.double()
    wide = J.shape[0] <= J.shape[1]
    lam, E = torch.linalg.eigh(J @ J.mT if wide else J.mT @ J)   # ascending eigenvalues s^2
    lam, E = lam.flip(0)[:k], E.flip(1)[:, :k]
    s = lam.clamp(min=0).sqrt()
    keep = s > rcond * s[:1]                                     # also drops s = 0 (rank deficiency)
    lam, E = lam[keep], E[:, keep]
    if wide:   # E = U_k
        return J.mT @ (E @ ((E.mT @ r) / lam))
    return E @ ((E.mT @ (J.mT @ r)) / lam)                       # E = V_k


def residual_jacobian(model: torch.nn.Module, residual_fn, batch) -> tuple[Tensor, Tensor]:
    """Residuals R (B,) and their Jacobian J (B x P) w.r.t. the trainable parameters, flattened in
    model.parameters() order. residual_fn(f, batch) -> residuals, where f(*inputs) is the model."""
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}

    def residuals(ps):
        R = residual_fn(lambda *inputs: functional_call(model, ps, inputs), batch).reshape(-1)
        return R, R

    jac, R = jacrev(residuals, has_aux=True)(params)   # B reverse passes, vmapped by torch.func
    J = torch.cat([jac[n].reshape(R.numel(), -1) for n in params], dim=1)
    return R.detach(), J.detach()


def sven_step(model: torch.nn.Module, residual_fn, batch, eta: float = 1.0, k: int | None = None,
              rcond: float = 1e-3) -> Tensor:
    """The Sven parameter update -eta V_k S_k^{-1} U_k^T R as a flat vector (model.parameters()
    order, trainable ones only); the model is not changed. k=None keeps every direction."""
    R, J = residual_jacobian(model, residual_fn, batch)
    return (-eta * truncated_pinv_solve(J, R, k, rcond)).to(J.dtype)


class Sven:
    """Sven on a model: `step(residual_fn, batch)` applies one update and returns the residuals
    before it. Not a torch.optim.Optimizer: it needs the residual vector, not a scalar loss."""

    def __init__(self, model: torch.nn.Module, eta: float = 1.0, k: int | None = None, rcond: float = 1e-3):
        self.model, self.eta, self.k, self.rcond = model, eta, k, rcond

    @torch.no_grad()
    def step(self, residual_fn, batch) -> Tensor:
        with torch.enable_grad():
            R, J = residual_jacobian(self.model, residual_fn, batch)
        delta = -self.eta * truncated_pinv_solve(J, R, self.k, self.rcond)
        params = [p for p in self.model.parameters() if p.requires_grad]
        for p, d in zip(params, delta.split([p.numel() for p in params])):
            p.add_(d.view_as(p).to(p.dtype))
        return R
