"""The Colored-MNIST training objective and the invariance penalties it is run with.

The objective is that of the IRM code's Colored-MNIST script (Arjovsky et al. 2019, arXiv
1907.02893; github.com/facebookresearch/InvariantRiskMinimization, `code/colored_mnist/main.py`),
which the Fishr (github.com/alexrame/fishr, `coloredmnist/train_coloredmnist.py`) and the
Hessian-alignment CMNIST scripts copy with its IRM-tuned hyperparameters:

    loss_t = R + l2 ||theta||^2 + lambda_t P,   lambda_t = lambda from step `anneal_steps` on, else 1,
    divided by lambda_t when lambda_t > 1 ("to keep gradients in a reasonable range"); ERM: R + l2 ||theta||^2

with R the mean of the training environments' risks R_e (mean binary cross-entropy with logits).
The penalties P, each on the environments' logits, risks or head gradients:

    IRMv1   sum over e, averaged: (d/ds R_e(s * logits) at s = 1)^2
            (Arjovsky et al. 2019, the IRMv1 objective of Sec. 3: a dummy scalar classifier s = 1.0)
    V-REx   the variance of the risks (Krueger et al., "Out-of-Distribution Generalization via Risk
            Extrapolation", ICML 2021, arXiv 2003.00688): as in the CMNIST scripts,
            (R_1 - R_2)^2 for two environments, i.e. 2 x the unbiased variance
    Fishr   sum_e ||v_e - v||^2, v_e the per-coordinate variance over the samples of e of the
            per-sample gradients of the loss w.r.t. the head, v = mean_e v_e (Rame, Dancette & Cord,
            "Fishr: Invariant Gradient Variances for Out-of-Distribution Generalization", ICML 2022,
            arXiv 2109.02934, with the diagonal of the gradient covariance; as in its CMNIST code,
            summed over the environments)

Stacks of independent models (leading `stack_dims` dimensions, one per seed) give one value per model.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def binary_risk(logits: torch.Tensor, y: torch.Tensor, stack_dims: int = 0) -> torch.Tensor:
    """Mean binary cross-entropy with logits per model: logits, y [*stack, n, 1] -> [*stack]."""
    nll = F.binary_cross_entropy_with_logits(logits, y.expand_as(logits), reduction="none")
    return nll.flatten(stack_dims).mean(-1)


def annealed_objective(risk, penalty, weight: float, step: int, anneal_steps: int, l2=None,
                       l2_weight: float = 0.0):
    """The CMNIST objective above; penalty None is ERM (no penalty, no rescaling)."""
    loss = risk + l2_weight * l2 if l2 is not None else risk
    if penalty is None:
        return loss
    lam = weight if step >= anneal_steps else 1.0
    loss = loss + lam * penalty
    return loss / lam if lam > 1.0 else loss


def irm_penalty(logits: torch.Tensor, y: torch.Tensor, stack_dims: int = 0) -> torch.Tensor:
    """IRMv1 of one environment: the squared gradient of its risk w.r.t. a scale s = 1 on the logits."""
    scale = torch.ones(*logits.shape[:stack_dims], *[1] * (logits.ndim - stack_dims), device=logits.device,
                       dtype=logits.dtype, requires_grad=True)
    (grad,) = torch.autograd.grad(binary_risk(logits * scale, y, stack_dims).sum(), scale, create_graph=True)
    return grad.pow(2).flatten(stack_dims).sum(-1)


def vrex_penalty(risks) -> torch.Tensor:
    """Mean squared pairwise difference of the environments' risks (each [*stack]): (R_1 - R_2)^2 for two."""
    risks = torch.stack(list(risks))
    if len(risks) < 2:
        raise ValueError("V-REx needs at least two environments")
    return 2 * risks.var(dim=0, unbiased=True)


def linear_head_sample_grads(features: torch.Tensor, logits: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
    """Per-sample gradients, with graph, of per-sample losses w.r.t. a linear head logits = W f + b:
    dl_i/dW = (dl_i/dz_i) f_i^T and dl_i/db = dl_i/dz_i, flat [..., n, out * (in + 1)] (weight, then bias).

    What BackPACK's BatchGrad returns for an nn.Linear under a mean loss, times n (the Fishr code's
    `grads * labels.size(0)`). losses [..., n] must depend on sample i only through logits[..., i, :]."""
    (dz,) = torch.autograd.grad(losses.sum(), logits, create_graph=True)    # [..., n, out]
    dw = dz.unsqueeze(-1) * features.unsqueeze(-2)                           # [..., n, out, in]
    return torch.cat([dw.flatten(-2), dz], dim=-1)


def fishr_penalty(sample_grads) -> torch.Tensor:
    """sum_e ||v_e - mean_e v_e||^2 with v_e the centred variance over samples (dim -2) of each
    environment's per-sample gradients ([..., n_e, P] each)."""
    var = [(G - G.mean(-2, keepdim=True)).pow(2).mean(-2) for G in sample_grads]
    mean = torch.stack(var).mean(0)
    return sum((v - mean).pow(2).sum(-1) for v in var)
