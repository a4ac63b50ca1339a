"""Muon: momentum orthogonalised by Newton-Schulz, for the matrix weights of hidden layers.

Keller Jordan et al., "Muon: An optimizer for hidden layers in neural networks" (2024),
https://kellerjordan.github.io/posts/muon/ ; code https://github.com/KellerJordan/Muon.
Also: Liu et al., "Muon is Scalable for LLM Training" (Moonlight), arXiv 2502.16982.

For a matrix W with gradient G (torch.optim.Muon's conventions, which this matches exactly):

    M <- beta M + (1 - beta) G                       (momentum buffer, beta = 0.95)
    U  = (1 - beta) G + beta M    if nesterov else M
    O  = NS5(U)                                      (reprolib.kernels.newton_schulz: ~ U V^T;
                                                      bf16 on CUDA, fp32 on the CPU, `ns_dtype`)
    W <- W (1 - lr wd) - lr * scale(m, n) * O

Two scale conventions are in use, both documented in torch.optim.Muon:
    "original"        scale = sqrt(max(1, m / n))     Keller Jordan: O has unit spectral norm; the
                                                      factor makes tall matrices' RMS match wide ones'.
    "match_rms_adamw" scale = 0.2 * sqrt(max(m, n))   Moonlight: the update's RMS is about 0.2, like
                                                      AdamW's, so Muon can share AdamW's lr and wd.
m = rows = output features of nn.Linear. Stacked weights (E, m, n), e.g. MoE experts, are
orthogonalised expert by expert.

Embeddings, the output head, gains, biases and routers are not hidden-layer matrices: they go in
groups with use_muon=False and are updated by AdamW (reprolib.optim.adamw_update), as in Keller
Jordan's MuonWithAuxAdam.

Speed (`fast=True`, the default on CUDA). On a small model the step is bound by kernel launches,
not arithmetic (`make bench`). The fast path computes the same update with few launches: all
hidden matrices go through one zero-padded batched Newton-Schulz (kernels.newton_schulz_many),
the momentum-to-direction part of the step is captured in a CUDA graph and replayed
(kernels.CapturedCall; gradients are copied into static buffers, the lr and weight decay are
applied outside the graph, so schedules work), and the AdamW part is PyTorch's fused AdamW kernel.
It agrees with the plain path (`fast=False`, identical to torch.optim.Muon) to rounding: bf16
Newton-Schulz on padded stacks sums in a different order. Hyperparameters other than lr and
weight decay are frozen into the graph at its capture (third step). REPRO_FAST_STEP=0 turns the
default off.
"""
import math
import os

import torch
from torch import Tensor

from ..kernels import NS5_COEFFICIENTS, CapturedCall, newton_schulz, newton_schulz_many
from .adamw import adamw_update
from .base import closure_loss

LR_SCALES = ("original", "match_rms_adamw", "none")


def muon_lr_scale(shape, convention: str = "original") -> float:
    m, n = shape[-2], shape[-1]
    if convention == "original":
        return math.sqrt(max(1.0, m / n))
    if convention == "match_rms_adamw":
        return 0.2 * math.sqrt(max(m, n))
    if convention == "none":
        return 1.0
    raise ValueError(f"unknown lr_scale {convention!r}; valid: {LR_SCALES}")


def muon_momentum(grads: list[Tensor], bufs: list[Tensor], beta: float = 0.95, nesterov: bool = True) -> list[Tensor]:
    """M <- beta M + (1 - beta) G (in place); returns U = (1 - beta) G + beta M (Nesterov) or M."""
    torch._foreach_lerp_(bufs, grads, 1 - beta)
    return torch._foreach_lerp(grads, bufs, beta) if nesterov else list(bufs)


def muon_update(grads, momentum_buffers, beta: float = 0.95, nesterov: bool = True, ns_steps: int = 5,
                coefficients=NS5_COEFFICIENTS, eps: float = 1e-7, ns_dtype: torch.dtype | None = None) -> Tensor:
    """The orthogonalised direction O (before the lr and the shape scale); updates the buffers.

    grads, momentum_buffers: one tensor each, or equal-length lists of same-shape tensors; a list
    is orthogonalised in one batched Newton-Schulz call and O is stacked along a new first dim.
    """
    single = isinstance(grads, Tensor)
    grads, bufs = ([grads], [momentum_buffers]) if single else (list(grads), list(momentum_buffers))
    U = muon_momentum(grads, bufs, beta, nesterov)
    U = U[0] if len(U) == 1 else torch.stack(U)
    O = newton_schulz(U, steps=ns_steps, coefficients=coefficients, eps=eps, dtype=ns_dtype)
    return O if single or len(grads) > 1 else O[None]


class Muon(torch.optim.Optimizer):
    """Muon for groups with use_muon=True (the default), AdamW for groups with use_muon=False.

    params: an iterable of matrices, or param groups (see `muon_param_groups`). Non-Muon groups
    take `lr`, `betas`, `eps`, `weight_decay` like torch.optim.AdamW.
    """

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, nesterov: bool = True,
                 ns_steps: int = 5, ns_coefficients=NS5_COEFFICIENTS, eps: float = 1e-7,
                 weight_decay: float = 0.0, lr_scale: str = "original",
                 betas=(0.9, 0.95), adamw_eps: float = 1e-8, ns_dtype: torch.dtype | None = None,
                 fast: bool | None = None):
        muon_lr_scale((1, 1), lr_scale)  # validates the convention name
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
                        ns_coefficients=tuple(ns_coefficients), eps=eps, weight_decay=weight_decay,
                        lr_scale=lr_scale, betas=tuple(betas), adamw_eps=adamw_eps, use_muon=True,
                        ns_dtype=ns_dtype)
        super().__init__(params, defaults)
        self.fast = fast    # None: on for CUDA parameters
        self._captured = {}  # (group index, params) -> static buffers and the captured call
        for group in self.param_groups:
            for p in group["params"]:
                if group["use_muon"] and p.ndim < 2:
                    raise ValueError(f"Muon updates matrices; a parameter of shape {tuple(p.shape)} "
                                     "belongs in a group with use_muon=False (AdamW)")

    def _buffers(self, params, key: str, like=None) -> list[Tensor]:
        out = []
        for p in params:
            state = self.state[p]
            if key not in state:
                state[key] = torch.zeros_like(p) if like is None else like(p)
            out.append(state[key])
        return out

    def _directions(self, params: list[Tensor], grads: list[Tensor], group: dict) -> Tensor:
        """Stacked directions (k, *shape) for k same-shape matrices."""
        return muon_update(grads, self._buffers(params, "momentum_buffer"), group["momentum"],
                           group["nesterov"], group["ns_steps"], group["ns_coefficients"], group["eps"],
                           group["ns_dtype"])

    def _fast_directions(self, params: list[Tensor], grads: list[Tensor], group: dict) -> list[Tensor]:
        """Muon: one padded Newton-Schulz call per row count. A subclass with its own `_directions`
        (NorMuon, AuON, SinkGD) gets one call of it per shape instead."""
        if type(self)._directions is not Muon._directions:
            by_shape = {}
            for i, p in enumerate(params):
                by_shape.setdefault((tuple(p.shape), p.dtype), []).append(i)
            out = [None] * len(params)
            for idx in by_shape.values():
                O = self._directions([params[i] for i in idx], [grads[i] for i in idx], group)
                for i, o in zip(idx, O.unbind(0)):
                    out[i] = o
            return out
        U = muon_momentum(grads, self._buffers(params, "momentum_buffer"), group["momentum"], group["nesterov"])
        return newton_schulz_many(U, steps=group["ns_steps"], coefficients=group["ns_coefficients"],
                                  eps=group["eps"], dtype=group["ns_dtype"])

    def _is_fast(self, params: list[Tensor]) -> bool:
        if self.fast is not None:
            return self.fast
        return os.environ.get("REPRO_FAST_STEP", "1") != "0" and all(p.is_cuda for p in params)

    def _fast_step(self, index: int, group: dict, params: list[Tensor]) -> None:
        key = (index, tuple(id(p) for p in params))
        if key not in self._captured:
            grads = [torch.zeros_like(p) for p in params]   # static: the graph reads these addresses
            dirs = [torch.empty_like(p) for p in params]
            scales = [muon_lr_scale(p.shape, group["lr_scale"]) for p in params]

            def directions():
                torch._foreach_copy_(dirs, self._fast_directions(params, grads, group))
                torch._foreach_mul_(dirs, scales)
            self._captured[key] = grads, dirs, CapturedCall(directions, params[0].device)
        grads, dirs, call = self._captured[key]
        torch._foreach_copy_(grads, [p.grad for p in params])
        call()
        if group["weight_decay"]:
            torch._foreach_mul_(params, 1 - group["lr"] * group["weight_decay"])
        torch._foreach_add_(params, dirs, alpha=-group["lr"])

    def load_state_dict(self, state_dict):
        self._captured.clear()  # captured graphs point at the old buffers
        super().load_state_dict(state_dict)

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure_loss(closure)
        for index, group in enumerate(self.param_groups):
            lr, wd = group["lr"], group["weight_decay"]
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if group["use_muon"] and self._is_fast(params):
                self._fast_step(index, group, params)
            elif group["use_muon"]:
                by_shape = {}
                for p in params:  # one batched Newton-Schulz per shape: few launches on small models
                    by_shape.setdefault((tuple(p.shape), p.dtype), []).append(p)
                for (shape, dtype), ps in by_shape.items():
                    O = self._directions(ps, [p.grad for p in ps], group).to(dtype)
                    if wd:
                        torch._foreach_mul_(ps, 1 - lr * wd)
                    torch._foreach_add_(ps, list(O.unbind(0)), alpha=-lr * muon_lr_scale(shape, group["lr_scale"]))
            else:
                state0 = self.state[params[0]]
                state0["step"] = state0.get("step", 0) + 1  # a group's tensors step together
                if self._is_fast(params):  # PyTorch's fused kernel: one launch instead of eight
                    step = torch.full((), state0["step"], dtype=torch.float32, device=params[0].device)
                    torch._fused_adamw_(params, [p.grad for p in params], self._buffers(params, "exp_avg"),
                                        self._buffers(params, "exp_avg_sq"), [], [step] * len(params), lr=lr,
                                        beta1=group["betas"][0], beta2=group["betas"][1], weight_decay=wd,
                                        eps=group["adamw_eps"], amsgrad=False, maximize=False)
                    continue
                adamw_update(params, [p.grad for p in params], self._buffers(params, "exp_avg"),
                             self._buffers(params, "exp_avg_sq"), state0["step"], lr, group["betas"],
                             group["adamw_eps"], wd)
        return loss


def is_hidden_matrix(name: str, p: Tensor, exclude=("emb", "lm_head", "router")) -> bool:
    """Muon's domain: >= 2-D weights of hidden layers (not embeddings, the head or a router)."""
    return p.ndim >= 2 and not any(key in name for key in exclude)


def muon_param_groups(model: torch.nn.Module, lr: float, adamw_lr: float, weight_decay: float = 0.0,
                      adamw_weight_decay: float = 0.0, exclude=("emb", "lm_head", "router")) -> list:
    """Split a model into a Muon group (hidden matrices) and an AdamW group (everything else)."""
    hidden, other = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (hidden if is_hidden_matrix(name, p, exclude) else other).append(p)
    groups = [dict(params=hidden, lr=lr, weight_decay=weight_decay, use_muon=True)]
    if other:
        groups.append(dict(params=other, lr=adamw_lr, weight_decay=adamw_weight_decay, use_muon=False))
    return groups
