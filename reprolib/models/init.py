"""Re-initialising a trained model: fresh draws of its initialisation and shrink-and-perturb.

Ash & Adams, "On Warm-Starting Neural Network Training", NeurIPS 2020, arXiv 1910.08475;
official code github.com/JordanAsh/warm_start (`run.py`, `shrink_perturb`).

When new data arrive, training can start from scratch (a fresh initialisation), from the previous
solution (a warm start), or from the shrink-perturb initialisation (Sec. 5):

    theta <- lambda * theta + sigma * theta_fresh                                   (shrink-perturb)

with lambda the shrinkage and sigma the noise scale. The paper writes the noise as N(0, sigma^2);
the official code draws it as a freshly initialised network of the same architecture ("using a
randomly-initialized model as a noise source respects how different kinds of parameters are often
initialized differently"), which is what `shrink_perturb` does. lambda = 0, sigma = 1 is a fresh
initialisation and lambda = 1, sigma = 0 is the warm start (the official README says so).
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def _seed_from(generator: torch.Generator | None) -> int:
    return int(torch.randint(0, 2 ** 62, (1,), generator=generator))


def fresh_init(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """A copy of `model` whose parameters and buffers are re-drawn by each module's own
    `reset_parameters()` (PyTorch's default initialisation of Linear, Conv, norms, ...).

    The draw is made on the CPU from a seed taken from `generator` (the global RNG when None), so a
    given generator state gives the same fresh weights on every device; the copy is then moved to
    the model's device. A module that owns parameters but has no `reset_parameters` would keep its
    trained values in the copy, so it raises instead."""
    for name, module in model.named_modules():
        owns = any(p is not None for p in module._parameters.values())
        if owns and not hasattr(module, "reset_parameters"):
            raise ValueError(f"module {name or type(module).__name__!r} owns parameters but has no "
                             "reset_parameters(); pass a freshly built model as `fresh=`")
    device = next(model.parameters()).device
    fresh = copy.deepcopy(model).to("cpu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_seed_from(generator))
        for module in fresh.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            if hasattr(module, "reset_running_stats"):
                module.reset_running_stats()
    return fresh.to(device)


@torch.no_grad()
def shrink_perturb(model: nn.Module, shrink: float, noise_scale: float, fresh: nn.Module | None = None,
                   generator: torch.Generator | None = None) -> nn.Module:
    """Shrink-perturb `model` in place and return it: every parameter becomes
    shrink * theta + noise_scale * theta_fresh, with theta_fresh the same parameter of `fresh` (a
    model of the same architecture; default `fresh_init(model, generator)`). Buffers (BatchNorm's
    running statistics) are taken from `fresh`, as the official code, which returns the fresh
    network with the mixed parameters."""
    fresh = fresh_init(model, generator) if fresh is None else fresh
    names = [n for n, _ in model.named_parameters()]
    if names != [n for n, _ in fresh.named_parameters()]:
        raise ValueError("`fresh` must have the same parameters as `model` (same architecture)")
    for theta, theta_fresh in zip(model.parameters(), fresh.parameters()):
        theta.mul_(shrink).add_(theta_fresh.to(theta.device), alpha=noise_scale)   # lambda theta + sigma theta_fresh
    for buf, buf_fresh in zip(model.buffers(), fresh.buffers()):
        buf.copy_(buf_fresh)
    return model
