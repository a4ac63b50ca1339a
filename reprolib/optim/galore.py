"""GaLore: Adam whose state lives in a low-rank projection of each gradient.

Zhao, Zhang, Chen, Wang, Anandkumar, Tian, "GaLore: Memory-Efficient LLM Training by Gradient Low-Rank
Projection", arXiv 2403.03507; official code https://github.com/jiaweizzhao/GaLore
(galore_torch/adamw.py and galore_projector.py, proj_type "std"), which this follows step for step.

For a matrix W (m x n) with gradient G, at the t-th step (t = 1, 2, ...):

    P  = U[:, :r] of SVD(G) if m < n,  V^T[:r] of SVD(G) if m >= n     (the gradient's top-r subspace)
         refreshed at t = 1, 1 + T, 1 + 2T, ... (T = update_proj_gap), kept in between
    R  = P^T G  (r x n) if m < n,   G P^T  (m x r) if m >= n            (Alg. 1: the projected gradient)
    M <- b1 M + (1 - b1) R,   V <- b2 V + (1 - b2) R^2                 (Adam on R only: r/m of the memory)
    psi(R) = M / (sqrt(V) + eps)
    W <- W - lr sqrt(1 - b2^t) / (1 - b1^t) * alpha * back(psi(R))     back(X) = P X or X P

As in the official code the bias corrections sit in the step size, eps (1e-6, the code's default)
is added to the raw sqrt(V), the SVD runs in fp32, and the Adam moments are NOT rotated when P is
refreshed. Weight decay is decoupled and applied after the step. Tensors in groups without a
`rank` (embeddings, norms, the head: the official "regular" group) get the same Adam without P.
The paper's LLaMA-60M setting: lr 0.01, rank 128 of d = 512, T = 200, alpha = 0.25.
"""
import math

import torch
from torch import Tensor

from .base import closure_loss


def galore_basis(G: Tensor, rank: int) -> Tensor:
    """P: the gradient's top-r left singular vectors (m x r) if m < n, else its top-r right ones (r x n)."""
    U, _, Vh = torch.linalg.svd(G.float(), full_matrices=False)
    return (U[:, :rank] if G.shape[0] < G.shape[1] else Vh[:rank]).to(G.dtype)


def project(G: Tensor, P: Tensor) -> Tensor:
    """R = P^T G for a wide G (P is m x r), G P^T for a tall or square one (P is r x n)."""
    return P.mT @ G if G.shape[0] < G.shape[1] else G @ P.mT


def project_back(X: Tensor, P: Tensor, wide: bool) -> Tensor:
    """P X for a wide weight, X P for a tall or square one: back to the weight's m x n."""
    return P @ X if wide else X @ P


@torch.no_grad()
def galore_direction(grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, betas, eps: float,
                     basis: Tensor | None) -> tuple[Tensor, Tensor]:
    """Adam on the projected gradient: returns (R, psi(R)); the moments are updated in place.
    basis=None: full-rank Adam (R = G)."""
    R = grad if basis is None else project(grad, basis)
    beta1, beta2 = betas
    exp_avg.lerp_(R, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(R, R, value=1 - beta2)
    return R, exp_avg / exp_avg_sq.sqrt().add_(eps)


class GaLore(torch.optim.Optimizer):
    """GaLore-Adam on groups with a `rank` (2-D weights); the official AdamW rule elsewhere.

    Subclasses change `direction(p, grad, R, psi, state, group)`, the full-size step direction
    before the learning rate. track_scaling=True also accumulates each matrix's Adam scaling
    ||psi(R)|| / ||R|| (||Adam(G)|| / ||G|| without a rank) in state["scaling_sum"] (Fira's Fig. 2).
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0, rank: int | None = None, update_proj_gap: int = 200,
                 scale: float = 0.25, track_scaling: bool = False):
        if lr < 0 or eps < 0 or update_proj_gap < 1 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"invalid lr {lr}, betas {betas}, eps {eps} or update_proj_gap {update_proj_gap}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, rank=rank,
                        update_proj_gap=update_proj_gap, scale=scale)
        self.track_scaling = track_scaling
        super().__init__(params, defaults)

    def direction(self, p, grad, R, psi, state, group) -> Tensor:
        """GaLore: alpha * back(psi(R)) (the plain Adam direction psi(G) without a rank)."""
        if state.get("basis") is None:
            return psi
        return project_back(psi, state["basis"], state["wide"]).mul_(group["scale"])

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure_loss(closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad, state = p.grad, self.state[p]
                low_rank = group["rank"] is not None and p.ndim == 2
                if not state:
                    state["step"] = 0
                    if low_rank:
                        state["wide"] = p.shape[0] < p.shape[1]
                if low_rank and state["step"] % group["update_proj_gap"] == 0:
                    state["basis"] = galore_basis(grad, group["rank"])  # Alg. 1: refresh every T steps
                basis = state.get("basis")
                if "exp_avg" not in state:
                    R0 = grad if basis is None else project(grad, basis)
                    state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(R0), torch.zeros_like(R0)
                R, psi = galore_direction(grad, state["exp_avg"], state["exp_avg_sq"], group["betas"],
                                          group["eps"], basis)
                if self.track_scaling and p.ndim == 2:
                    s = psi.norm() / R.norm().clamp_min(1e-30)
                    state["scaling_sum"] = state.get("scaling_sum", 0.0) + s
                    state["scaling_n"] = state.get("scaling_n", 0) + 1
                state["step"] += 1
                t = state["step"]
                beta1, beta2 = group["betas"]
                step_size = group["lr"] * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
                p.add_(self.direction(p, grad, R, psi, state, group), alpha=-step_size)
                if group["weight_decay"]:
                    p.add_(p, alpha=-group["lr"] * group["weight_decay"])  # after the step, as the code
        return loss

    def state_elements(self) -> int:
        """Optimizer-state elements (moments and projectors): the paper's memory measure."""
        return sum(v.numel() for s in self.state.values() for k, v in s.items()
                   if isinstance(v, Tensor) and k in ("exp_avg", "exp_avg_sq", "basis"))

    def mean_scaling(self, params) -> list[float]:
        """Each tracked matrix's time-averaged Adam scaling ||psi|| / ||R||, in `params` order."""
        return [float(self.state[p]["scaling_sum"]) / self.state[p]["scaling_n"] for p in params]


def lowrank_param_groups(model: torch.nn.Module, rank: int | None, update_proj_gap: int = 200,
                         scale: float = 0.25, lr: float | None = None, other_lr: float | None = None,
                         exclude=("emb", "lm_head", "router")) -> list:
    """A low-rank group (attention and MLP matrices, as the official torchrun_main.py's target
    modules) and a regular group (embeddings, norms, head). lr / other_lr: per-group lrs (None:
    the optimizer's). rank=None puts everything in full-rank Adam."""
    hidden, other = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (hidden if p.ndim == 2 and not any(k in name for k in exclude) else other).append(p)
    g1 = dict(params=hidden, rank=rank, update_proj_gap=update_proj_gap, scale=scale)
    g2 = dict(params=other, rank=None)
    if lr is not None:
        g1["lr"] = lr
    if other_lr is not None:
        g2["lr"] = other_lr
    return [g1, g2] if other else [g1]
