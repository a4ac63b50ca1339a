"""Learned dynamics models for model-based RL: one deterministic network, a deterministic ensemble, and
the probabilistic Gaussian ensemble of PETS/MBPO, all as members of one stacked MLP.

Chua et al., "Deep RL in a Handful of Trials using Probabilistic Dynamics Models" (PETS, NeurIPS 2018,
arXiv 1805.12114); Janner et al., "When to Trust Your Model" (MBPO, NeurIPS 2019, arXiv 1906.08253).

Every member maps inputs x to 2k outputs: a mean mu (k) and a raw log-variance. A deterministic member
is trained on the squared error of mu alone; a probabilistic member on the Gaussian negative log
likelihood with its log-variance softly bounded as in the PETS/MBPO code (fixed bounds here):

    logvar = max_lv - softplus(max_lv - raw),  logvar = min_lv + softplus(logvar - min_lv)
    NLL    = mean[(mu - y)^2 exp(-logvar) + logvar]

Sampling from an ensemble (MBPO's model rollouts): for each transition draw one member uniformly, then
y = mu + exp(logvar / 2) * noise for a probabilistic member, y = mu for a deterministic one.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

MAX_LOGVAR, MIN_LOGVAR = 0.5, -10.0


def bounded_logvar(raw: torch.Tensor) -> torch.Tensor:
    lv = MAX_LOGVAR - F.softplus(MAX_LOGVAR - raw)
    return MIN_LOGVAR + F.softplus(lv - MIN_LOGVAR)


def split_output(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Network outputs [..., 2k] -> (mean [..., k], bounded log-variance [..., k])."""
    mu, raw = out.chunk(2, dim=-1)
    return mu, bounded_logvar(raw)


def dynamics_loss(out: torch.Tensor, y: torch.Tensor, probabilistic: torch.Tensor) -> torch.Tensor:
    """Per-member loss [R] for outputs out [R, B, 2k] and targets y [R, B, k] (or [B, k]); probabilistic
    [R] bool picks the Gaussian NLL, else the squared error of the mean."""
    mu, logvar = split_output(out)
    mse = (mu - y).pow(2).mean((1, 2))
    nll = ((mu - y).pow(2) * torch.exp(-logvar) + logvar).mean((1, 2))
    return torch.where(probabilistic, nll, mse)


def fit_dynamics(net, x: torch.Tensor, y: torch.Tensor, probabilistic: torch.Tensor, steps: int, lr: float = 1e-3,
                 weight_decay: float = 1e-4) -> list[float]:
    """Full-batch Adam on every member at once; x [R, N, in] and y [R, N, k] (each member its own data).
    Returns the mean training loss every 100 steps."""
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    losses = []
    for step in range(steps):
        loss = dynamics_loss(net(x), y, probabilistic).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            losses.append(loss.item() / len(probabilistic))
    return losses


@torch.no_grad()
def sample_ensemble(out: torch.Tensor, members: torch.Tensor, probabilistic: torch.Tensor,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw per transition from ensembles of a stacked model. out [D, N, 2k] are every model
    member's outputs on the same N inputs; members [E, S] lists the S member indices of each of E
    ensembles (S = 1: a single model). Returns [E, N, k]: for each ensemble and transition, a uniformly
    drawn member's mean, plus its Gaussian noise where that member is probabilistic."""
    E, S = members.shape
    pick, noise = ensemble_draws(E, S, out.size(1), out.size(-1) // 2, generator, out.device, out.dtype)
    return sample_ensemble_drawn(out, members, probabilistic, pick, noise)


def ensemble_draws(E: int, S: int, N: int, k: int, generator: torch.Generator | None = None, device=None,
                   dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """sample_ensemble's random draws, made in its order: the member picked per transition [E, N] and
    the Gaussian noise [E, N, k]. Draws made ahead of time (several steps' at once) give the same numbers."""
    pick = torch.randint(S, (E, N), generator=generator, device=device)
    noise = torch.randn((E, N, k), generator=generator, device=device, dtype=dtype)
    return pick, noise


@torch.no_grad()
def sample_ensemble_drawn(out: torch.Tensor, members: torch.Tensor, probabilistic: torch.Tensor, pick: torch.Tensor,
                          noise: torch.Tensor) -> torch.Tensor:
    """sample_ensemble with its draws given (ensemble_draws): pick [E, N] and noise [E, N, k]."""
    mu, logvar = split_output(out)                                    # [D, N, k]
    E, N = pick.shape
    idx = members.gather(1, pick)                                     # [E, N] model member per transition
    n_idx = torch.arange(N, device=out.device)[None].expand(E, N)
    m, lv = mu[idx, n_idx], logvar[idx, n_idx]                        # [E, N, k]
    return m + torch.where(probabilistic[idx][..., None], torch.exp(lv / 2) * noise, torch.zeros_like(m))


def member_subset(nets, idx: torch.Tensor):
    """One stacked network (a copy of nets[0]'s kind) holding members idx of the stacked networks `nets`
    placed end to end (same layer sizes): the members a computation needs, without the others' work."""
    sub = copy.deepcopy(nets[0])
    with torch.no_grad():
        for name, p in list(sub.named_parameters()) + list(sub.named_buffers()):
            full = torch.cat([dict(list(n.named_parameters()) + list(n.named_buffers()))[name] for n in nets])
            p.data = full[idx.to(full.device)].detach().clone()
    return sub
