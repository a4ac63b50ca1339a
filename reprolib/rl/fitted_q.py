"""Model-based fitted Q iteration on a stack of Q-networks, and what the Lipschitz view of model-based RL
measures about the result.

Zheng, Wang, Xu & Huang, "Is Model Ensemble Necessary? Model-based RL via a Single Model with Lipschitz
Regularized Value Function" (ICLR 2023, arXiv 2302.01244). Their bound on the gap between the Bellman
operators under the true dynamics P and a learned model P_hat (rewards known, deterministic P):

    | T_P V(s) - T_Phat V(s) | = | max_a [r + gamma V(f(s, a))] - max_a [r + gamma E_Phat V(s')] |
                               <= gamma max_a | V(f(s, a)) - E_Phat V(s') |
                               <= gamma L_V max_a W1(delta_f(s, a), Phat(.|s, a))            (Prop.)

so a value function with a small Lipschitz constant L_V suffers less from model error.

Fitted Q iteration (each member r of the stack trains on the next states of its own model):
    every `inner` steps:  Q_target <- Q
    each step:            y(s, a) = c_r r(s, a) + gamma max_a' Q_target(s'_r(s, a), a')
                          loss_r  = mean (Q_r(s, a) - y)^2  [+ lambda * adversarial penalty_r]
with c_r = reward_scale (values then stay of order one) and a finite action set a (a Q-head per action).
"""
from __future__ import annotations

import copy

import torch

from ..optim.member_step import member_step
from ..penalties.adversarial_smoothness import adversarial_smoothness


def q_step(qnet, features, opt, lrs: torch.Tensor, z: torch.Tensor, y: torch.Tensor, eps: torch.Tensor | None,
           adv_weight: float, **adv) -> torch.Tensor:
    """One step of every member on loss_r = mean (Q_r(s, a) - y)^2 [+ lambda * adversarial penalty_r] (eps None:
    no penalty; adv: adversarial_smoothness's generator or pre-drawn start); returns the TD loss [R]."""
    loss = (qnet(features(z)) - y).pow(2).mean((1, 2))
    td = loss.detach()
    if eps is not None:
        loss = loss + adv_weight * adversarial_smoothness(lambda x: qnet(features(x)), z, eps, **adv)
    opt.zero_grad(set_to_none=True)
    loss.sum().backward()
    member_step(opt, lrs)
    return td


def fitted_q_iteration(qnet, features, sample_states, next_states, reward, gamma: float, iters: int, inner: int,
                       batch: int, lrs: torch.Tensor, eps: torch.Tensor | None = None, adv_weight: float = 1.0,
                       reward_scale: float = 1.0, probe: torch.Tensor | None = None, generator=None) -> dict:
    """Train the stacked Q-network `qnet` ([R, B, d] -> [R, B, A]) in place.

    features(z) -> network inputs; sample_states(B) -> states z [B, n]; next_states(z) -> [R, B, A, n]
    (each member's model draw for every action); reward(z) -> [B, A]; lrs [R] Adam learning rates;
    eps [R] adversarial radii (0 or None: no penalty). Returns V = max_a Q on the `probe` states after
    every iteration ([iters, R, P]) and the mean TD loss per iteration ([iters, R])."""
    R = lrs.numel()
    opt = torch.optim.Adam(qnet.parameters(), lr=1.0)
    use_adv = eps is not None and bool((eps > 0).any())
    history, td = [], []
    target = copy.deepcopy(qnet).eval()
    for it in range(iters):
        target.load_state_dict(qnet.state_dict())
        td_sum = torch.zeros(R, device=lrs.device)
        for _ in range(inner):
            z = sample_states(batch)                                           # [B, n]
            with torch.no_grad():
                nxt = next_states(z)                                           # [R, B, A, n]
                A = nxt.size(2)
                q_next = target(features(nxt.flatten(1, 2))).amax(-1).view(R, batch, A)
                y = reward_scale * reward(z)[None] + gamma * q_next            # [R, B, A]
            td_sum += q_step(qnet, features, opt, lrs, z, y, eps if use_adv else None, adv_weight, generator=generator)
        td.append(td_sum / inner)
        if probe is not None:
            with torch.no_grad():
                history.append(state_values(qnet, features, probe))
    return dict(values=torch.stack(history) if history else None, td=torch.stack(td))


def fitted_q_iteration_blocked(qnet, features, draw, next_states, reward, gamma: float, iters: int, inner: int,
                               batch: int, lrs: torch.Tensor, eps: torch.Tensor | None = None, adv_weight: float = 1.0,
                               reward_scale: float = 1.0, probe: torch.Tensor | None = None, generator=None) -> dict:
    """fitted_q_iteration with the same numbers and fewer, larger operations: the target network is fixed
    for an iteration's `inner` steps and the states and model draws do not depend on the Q-network, so
    the random draws of the iteration's steps are made first, in the order fitted_q_iteration makes them
    (states, model draws, then the adversarial random start), and the next states and targets of all
    `inner` steps are computed at once.

    draw(B) -> (z [B, n], d): one step's states and the model draws next_states needs (a tuple of
    tensors, each with the step's transitions along dim 1); next_states(z, d) -> [R, B', A, n] for the
    states z [B', n] of several steps and their draws concatenated along dim 1. The rest is as in
    fitted_q_iteration."""
    R = lrs.numel()
    opt = torch.optim.Adam(qnet.parameters(), lr=1.0)
    use_adv = eps is not None and bool((eps > 0).any())
    history, td = [], []
    target = copy.deepcopy(qnet).eval()
    for it in range(iters):
        target.load_state_dict(qnet.state_dict())
        zs, ds, starts = [], [], []
        for _ in range(inner):
            z, d = draw(batch)
            zs.append(z)
            ds.append(d)
            if use_adv:                                                        # adversarial_smoothness's draw
                starts.append(torch.rand((R, *z.shape), generator=generator, device=z.device, dtype=z.dtype))
        z_all = torch.cat(zs)
        with torch.no_grad():
            nxt = next_states(z_all, tuple(torch.cat(parts, 1) for parts in zip(*ds)))   # [R, inner B, A, n]
            A = nxt.size(2)
            q_next = target(features(nxt.flatten(1, 2))).amax(-1).view(R, inner * batch, A)
            y_all = reward_scale * reward(z_all)[None] + gamma * q_next                  # [R, inner B, A]
        td_sum = torch.zeros(R, device=lrs.device)
        for i, z in enumerate(zs):
            td_sum += q_step(qnet, features, opt, lrs, z, y_all[:, i * batch:(i + 1) * batch],
                             eps if use_adv else None, adv_weight, start=starts[i] if use_adv else None)
        td.append(td_sum / inner)
        if probe is not None:
            with torch.no_grad():
                history.append(state_values(qnet, features, probe))
    return dict(values=torch.stack(history) if history else None, td=torch.stack(td))


@torch.no_grad()
def state_values(qnet, features, z: torch.Tensor) -> torch.Tensor:
    """V(z) = max_a Q(z, a) of every member at states z [P, n] (shared) or [R, P, n] (a set per member),
    in eval mode (no power-iteration step); [R, P]."""
    was = qnet.training
    qnet.eval()
    v = qnet(features(z)).amax(-1)
    qnet.train(was)
    return v


def value_gradient_norm(qnet, features, z: torch.Tensor) -> torch.Tensor:
    """max over states z [P, n] of ||grad_z V(z)||_2 for every member: the local Lipschitz estimate L_V-hat
    (a lower bound of the Lipschitz constant in the metric of z); [R]."""
    was = qnet.training
    qnet.eval()
    zz = z.detach().requires_grad_(True)
    with torch.enable_grad():
        v = qnet(features(zz)).amax(-1)                                        # [R, P]
        R = v.size(0)
        grads = torch.stack([torch.autograd.grad(v[r].sum(), zz, retain_graph=r < R - 1)[0] for r in range(R)])
    qnet.train(was)
    return grads.norm(dim=-1).amax(-1)


@torch.no_grad()
def greedy_return(qnet, features, env_step, to_state, actions: torch.Tensor, starts: torch.Tensor,
                  steps: int) -> torch.Tensor:
    """Mean undiscounted return of each member's greedy policy argmax_a Q(z, a) in the true environment.
    starts: states z [n, dim]; env_step(state, u) -> (next state, reward) in the environment's own
    coordinates; to_state(z) / to_state(state, inverse=True) converts. Returns [R]."""
    was = qnet.training
    qnet.eval()
    R = qnet.sn_scale.numel()
    state = to_state(starts)[None].expand(R, *starts.shape).clone()
    total = torch.zeros(R, starts.size(0), device=starts.device, dtype=starts.dtype)
    for _ in range(steps):
        a = qnet(features(to_state(state, inverse=True))).argmax(-1)           # [R, n]
        state, r = env_step(state, actions[a])
        total += r
    qnet.train(was)
    return total.mean(-1)


@torch.no_grad()
def bellman_gap(qnet, features, reward: torch.Tensor, true_next: torch.Tensor, model_next: torch.Tensor,
                gamma: float, metric) -> dict:
    """The two Bellman operators applied to each member's own V = max_a Q at P states, and the terms of
    the proposition's bound.

    reward [P, A] (true, known); true_next [P, A, n]; model_next [R, K, P, A, n] (K draws of each member's
    model); metric(z1, z2) -> distances over the last dim. Returns [R, P] tensors:
      gap   = |max_a (r + gamma V(f(s, a))) - max_a (r + gamma mean_K V(s'))|
      vdiff = max_a |V(f(s, a)) - mean_K V(s')|       (gap <= gamma * vdiff)
      w1    = max_a mean_K d(f(s, a), s')             (W1 to a point mass is the mean distance)"""
    R, K, P, A, n = model_next.shape
    v_true = state_values(qnet, features, true_next.reshape(1, P * A, n).expand(R, -1, -1)).view(R, P, A)
    ev = state_values(qnet, features, model_next.reshape(R, K * P * A, n)).view(R, K, P, A).mean(1)
    t_true = (reward[None] + gamma * v_true).amax(-1)
    t_model = (reward[None] + gamma * ev).amax(-1)
    w1 = metric(true_next[None, None], model_next).mean(1).amax(-1)
    return dict(gap=(t_true - t_model).abs(), vdiff=(v_true - ev).abs().amax(-1), w1=w1)
