"""Curvature of a loss L(theta) through Hessian-vector products.

    Hv                      = d/dtheta (g^T v),  g = dL/dtheta   (Pearlmutter 1994)
    quadratic_form          = u^T H u
    directional_sharpness   = u^T H u / ||u||^2   ("normalised directional
                              sharpness", NDS: "Why Muon Outperforms Adam: A
                              Curvature Perspective"; Pan & Li 2023, "Toward
                              understanding why Adam converges faster than SGD
                              for transformers")
    block_quadratic_forms   = u^T H u = sum_g u_g^T H_gg u_g + cross
    top_hessian_eigenvalue  = lambda with the largest |lambda|, by power iteration
    taylor_terms(delta)     : L(theta + delta) - L(theta)
                              ~ g^T delta + 1/2 delta^T H delta

`loss_fn` is a zero-argument callable returning a scalar loss; `params` is a
list of tensors with requires_grad; vectors (v, u, delta) are lists of tensors
shaped like `params`. The forward and both backward passes run with autocast
off, TF32 matmuls off, and SDPA forced to the MATH backend (the flash /
memory-efficient attention kernels have no double backward), so HVPs are
exact in the parameters' dtype.
"""

from contextlib import contextmanager

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

__all__ = [
    "hvp",
    "quadratic_form",
    "directional_sharpness",
    "block_quadratic_forms",
    "top_hessian_eigenvalue",
    "taylor_terms",
]


@contextmanager
def _exact(params):
    # TF32 matmuls (set_float32_matmul_precision("high"), common in training
    # code) would cost fp32 HVPs ~3 digits; restore the caller's setting after
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        with sdpa_kernel([SDPBackend.MATH]), torch.autocast(params[0].device.type, enabled=False):
            yield
    finally:
        torch.set_float32_matmul_precision(precision)


def _dot(a, b) -> torch.Tensor:
    return sum((x.detach() * y.detach()).sum() for x, y in zip(a, b))


class _Hessian:
    """g = dL/dtheta with its graph kept, so several HVPs share one forward pass."""

    def __init__(self, loss_fn, params):
        self.params = list(params)
        loss = loss_fn()
        self.g = torch.autograd.grad(loss, self.params, create_graph=True)
        # a gradient that is constant in theta (e.g. a linear term) has no
        # graph; its rows of H are zero, so it is dropped from the backward
        self.live = [i for i, gi in enumerate(self.g) if gi.requires_grad]

    def __call__(self, v, retain=True):
        if not self.live:
            return [torch.zeros_like(p) for p in self.params]
        Hv = torch.autograd.grad(
            [self.g[i] for i in self.live],
            self.params,
            grad_outputs=[v[i] for i in self.live],
            retain_graph=retain,
            allow_unused=True,
            materialize_grads=True,
        )
        return list(Hv)


def hvp(loss_fn, params, v):
    """H v by double backward; returns a list shaped like params."""
    with _exact(params):
        return _Hessian(loss_fn, params)(v, retain=False)


def quadratic_form(loss_fn, params, u) -> float:
    """u^T H u."""
    return _dot(u, hvp(loss_fn, params, u)).item()


def directional_sharpness(loss_fn, params, u) -> float:
    """u^T H u / ||u||^2 (NDS); nan when u = 0."""
    uu = _dot(u, u).item()
    return quadratic_form(loss_fn, params, u) / uu if uu > 0 else float("nan")


def block_quadratic_forms(loss_fn, params, u, groups) -> dict:
    """Split u^T H u into per-group (within) and between-group (cross) curvature.

    groups: list of lists of indices into params (e.g. one per transformer block).
    within[g] = u_g^T H_gg u_g where u_g is u with every tensor outside group g
    zeroed; cross = total - sum(within) = sum_{g != h} u_g^T H_gh u_h (plus
    terms of params in no group). One forward and len(groups) + 1 HVPs.
    """
    with _exact(params):
        H = _Hessian(loss_fn, params)
        total = _dot(u, H(u)).item()
        within = []
        for grp in groups:
            members = set(grp)
            u_g = [ui if i in members else torch.zeros_like(ui) for i, ui in enumerate(u)]
            within.append(_dot(u_g, H(u_g)).item())
    return dict(total=total, within=within, cross=total - sum(within))


def top_hessian_eigenvalue(loss_fn, params, iters: int = 100, tol: float = 1e-6, seed: int = 0) -> float:
    """The eigenvalue of H with the largest |lambda|, returned with its sign.

    Power iteration v <- Hv / ||Hv|| finds the largest-magnitude eigenvalue,
    which is the most negative one when that dominates; the Rayleigh quotient
    v^T H v gives its sign. Stops when its relative change is below `tol`. The
    error shrinks like (lambda_2 / lambda_1)^{2k}: a small gap needs more
    `iters`, and lambda_2 = -lambda_1 makes it fail to converge.
    """
    gen = torch.Generator().manual_seed(seed)
    # drawn on the CPU so a seed gives the same start on every device
    v = [torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p.device, p.dtype) for p in params]
    with _exact(params):
        H = _Hessian(loss_fn, params)
        lam = None
        for _ in range(iters):
            norm = _dot(v, v).sqrt()
            if norm == 0:  # v landed in the null space: H v = 0 exactly
                return 0.0
            v = [vi / norm for vi in v]
            Hv = H(v)
            lam_new = _dot(v, Hv).item()
            if lam is not None and abs(lam_new - lam) <= tol * abs(lam_new):
                return lam_new
            lam, v = lam_new, Hv
    return lam


def taylor_terms(loss_fn, params, delta) -> dict:
    """Second-order Taylor model of a step delta (e.g. theta_{t+1} - theta_t).

    first_order  = -g^T delta         (predicted decrease; > 0 going downhill)
    second_order = 1/2 delta^T H delta (curvature penalty)
    nds          = delta^T H delta / ||delta||^2
    step_norm    = ||delta||
    predicted_decrease = first_order - second_order
    One gradient and one HVP through the same graph.
    """
    with _exact(params):
        H = _Hessian(loss_fn, params)
        first = -_dot(H.g, delta).item()
        dHd = _dot(delta, H(delta, retain=False)).item()
    dd = _dot(delta, delta).item()
    second = 0.5 * dHd
    return dict(
        first_order=first,
        second_order=second,
        nds=dHd / dd if dd > 0 else float("nan"),
        step_norm=dd**0.5,
        predicted_decrease=first - second,
    )
