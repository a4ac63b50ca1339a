"""Hessian and gradient alignment of a classifier head across training environments.

Hemati, Zhang, Estiri & Chen, "Understanding Hessian Alignment for Domain Generalization",
ICCV 2023, arXiv 2308.11778; official code github.com/huawei-noah/Federated-Learning/tree/main/
HessianAlignment (`cmnist/cmnist_HGP.py`, `cmnist/cmnist_Hutchinson.py`, where the method is the
algorithm named 'sad'). This module follows those two scripts line by line.

The paper bounds the transfer measure between a source and a target domain by the spectral norm
of the difference of their classifier-head Hessians, ||H_S - H_T||_2, and so regularises the
head w (the last linear layer, weight and bias) towards equal Hessians and gradients in every
training environment e. With R_e the risk of environment e, R = mean_e R_e,
g_e = grad_w R_e, g = grad_w R, H_e = grad^2_w R_e, H = grad^2_w R, the penalty is

    P = sum_e ||C_e - C||^2 + sum_e ||g_e - g||^2          (each environment against the mean risk)

where C stands for one of two cheap stand-ins for the Hessian that never form it:

    HGP         C_e = H_e g_e = ||g_e|| grad_w ||g_e||
                (grad_w ||g|| = (dg/dw)^T g / ||g|| = H g / ||g||, H symmetric): two backward passes
    Hutchinson  C_e = diag(H_e) ~ (1/K) sum_k z_k * (H_e z_k),  z_k Rademacher, K = 150 in the
                CMNIST script: K Hessian-vector products per environment, batched

Both stay differentiable (create_graph), so the penalty's gradient reaches the whole network
through the features the head sees.

Stacks: a parameter may carry `stack_dims` leading dimensions that index independent models (one
per seed); losses are then given per model ([*stack]) and every result is per model ([*stack, P]
for flat vectors over the P head coordinates, [*stack] for penalties).
"""
from __future__ import annotations

import torch


def flat(tensors, stack_dims: int = 0) -> torch.Tensor:
    """Concatenate tensors shaped like the parameters into [*stack, P]."""
    return torch.cat([t.reshape(*t.shape[:stack_dims], -1) for t in tensors], dim=-1)


def hessian_gradient_product(loss: torch.Tensor, params, stack_dims: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(g, H g) of `loss` (one per model, summed here) w.r.t. params, flat [*stack, P], both with graph.

    H g = ||g|| grad_w ||g||  (cmnist_HGP.py: `Hg_0 = envs[0]['sad'] * grad(envs[0]['sad'])`)."""
    params = list(params)
    g = flat(torch.autograd.grad(loss.sum(), params, create_graph=True), stack_dims)
    norm = g.norm(dim=-1)                                        # ||g||, one per model
    # the models are independent, so the gradient of the summed norms is each model's own grad ||g||
    grad_norm = flat(torch.autograd.grad(norm.sum(), params, create_graph=True), stack_dims)
    return g, norm.unsqueeze(-1) * grad_norm


def autograd_hvp(grads, params):
    """v -> H v through the graph of grads (grad_w L with create_graph=True), for v shaped like params
    with K probes on a leading dimension: one batched backward pass (is_grads_batched), with graph."""
    params = list(params)
    return lambda v: torch.autograd.grad(list(grads), params, grad_outputs=list(v), is_grads_batched=True,
                                         create_graph=True)


def hutchinson_diagonal(hvp, params, n_samples: int, generator: torch.Generator | None = None,
                        stack_dims: int = 0) -> torch.Tensor:
    """diag(H) ~ (1/K) sum_k z_k * (H z_k), z_k Rademacher, flat [*stack, P], with graph.

    hvp: v -> H v for K probes at once (autograd_hvp, or metrics.hessian.linear_head_hvp for a
    linear head). The script's `calc_hessian_diag(model, loss_grad, repeat)` loops over the probes,
    one Hessian-vector product each; the estimator is the same. Unbiased, with
    E||estimate - diag(H)||^2 = (1/K) sum_{i != j} H_ij^2 per model."""
    params = list(params)
    z = [torch.randint(0, 2, (n_samples, *p.shape), generator=generator, device=p.device).to(p.dtype) * 2 - 1
         for p in params]
    return flat([(zi * hzi).mean(0) for zi, hzi in zip(z, hvp(z))], stack_dims)


def alignment_penalty(g_envs, c_envs, g_mean, c_mean) -> torch.Tensor:
    """sum_e ||C_e - C||^2 + sum_e ||g_e - g||^2 over the last dimension (cmnist_HGP.py `sad_penalty`)."""
    return sum((c - c_mean).pow(2).sum(-1) + (g - g_mean).pow(2).sum(-1) for g, c in zip(g_envs, c_envs))


def hgp_penalty(env_risks, params, stack_dims: int = 0) -> torch.Tensor:
    """The HGP penalty from the environments' risks (each [*stack]) w.r.t. the head's params."""
    params = list(params)
    mean_risk = torch.stack(list(env_risks)).mean(0)              # `train_nll`
    g_mean, hg_mean = hessian_gradient_product(mean_risk, params, stack_dims)
    per_env = [hessian_gradient_product(r, params, stack_dims) for r in env_risks]
    return alignment_penalty([g for g, _ in per_env], [hg for _, hg in per_env], g_mean, hg_mean)


def hutchinson_penalty(env_risks, params, n_samples: int = 150, generator: torch.Generator | None = None,
                       stack_dims: int = 0, hvps=None) -> torch.Tensor:
    """The Hutchinson penalty: diag(H_e) from `n_samples` Rademacher probes (cmnist_Hutchinson.py:
    repeat=150) in place of H_e g_e, each estimate with its own probes (the mean's first).
    hvps: one batched v -> H_e v per environment (default: autograd_hvp through each gradient); the
    mean risk's Hessian is then their mean."""
    params = list(params)
    risks = [torch.stack(list(env_risks)).mean(0), *env_risks]
    grads = [torch.autograd.grad(r.sum(), params, create_graph=True) for r in risks]
    if hvps is None:
        hvps = [autograd_hvp(g, params) for g in grads]
    else:
        env_hvps = list(hvps)
        mean_hvp = lambda v: [torch.stack(parts).mean(0) for parts in zip(*(h(v) for h in env_hvps))]
        hvps = [mean_hvp, *env_hvps]
    diags = [hutchinson_diagonal(h, params, n_samples, generator, stack_dims) for h in hvps]
    flats = [flat(g, stack_dims) for g in grads]
    return alignment_penalty(flats[1:], diags[1:], flats[0], diags[0])
