"""TD3 on a stack of R independent agents, each with its own Pendulum, replay buffer and learning rate.

Fujimoto, van Hoof & Meger, "Addressing Function Approximation Error in Actor-Critic Methods" (TD3, ICML 2018,
arXiv 1802.09477), with the defaults of the CaRe-BN code (github.com/xuzijie32/CaRe-BN, continuous_control/
main.py and actor_critic.py `TD3`): batch 256, gamma 0.99, tau 0.005, exploration noise 0.1 max_action,
target policy noise 0.2 max_action clipped at 0.5 max_action, actor updated every 2nd critic update, Adam
for both, one update per environment step after the random warm-up. For member r:

    y = r + gamma min_i Q'_i(s', clip(pi'(s') + clip(eps, -c, c), -a_max, a_max))
    critic: sum_i mean (Q_i(s, a) - y)^2;   actor (every 2nd step): -mean Q_1(s, pi(s))
    targets: theta' <- tau theta + (1 - tau) theta'   (the actor's BN moving statistics too: the official
             code keeps them as parameters, so its soft update averages them)

The actor's forward takes a `mode`: "train" when it is optimised (BN on batch statistics, moving statistics
updated), "eval" when it acts or gives target actions. Pendulum never terminates, so every transition
bootstraps (the official code also bootstraps at the time limit). Re-BN (CaRe-BN's re-calibration): every
`recal_every` environment steps the actor's moving statistics are recomputed from `recal_batches` replay
batches for the members flagged in `recal`.
"""
from __future__ import annotations

import copy

import torch

from ..envs.pendulum import BatchedPendulum, MAX_TORQUE
from ..optim.member_step import member_step


def _soft_update(target, online, tau: float) -> None:
    with torch.no_grad():
        for t, p in zip(target.parameters(), online.parameters()):
            t.lerp_(p, tau)
        for (name, t), (_, p) in zip(target.named_buffers(), online.named_buffers()):
            if name.endswith(("moving_mean", "moving_var")):
                t.lerp_(p, tau)


class ReplayBuffers:
    """R replay buffers of (s, a, r, s') in one tensor each; sample() draws B indices per member."""

    def __init__(self, runs: int, capacity: int, obs_dim: int, act_dim: int, device=None):
        self.obs = torch.zeros(runs, capacity, obs_dim, device=device)
        self.act = torch.zeros(runs, capacity, act_dim, device=device)
        self.rew = torch.zeros(runs, capacity, 1, device=device)
        self.nxt = torch.zeros(runs, capacity, obs_dim, device=device)
        self.size, self.pos, self.capacity = 0, 0, capacity

    def add(self, obs, act, rew, nxt) -> None:
        self.obs[:, self.pos], self.act[:, self.pos], self.rew[:, self.pos, 0], self.nxt[:, self.pos] = obs, act, rew, nxt
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch: int, generator=None):
        R = self.obs.size(0)
        idx = torch.randint(self.size, (R, batch), generator=generator, device=self.obs.device)
        g = lambda x: x.gather(1, idx[..., None].expand(R, batch, x.size(-1)))   # noqa: E731
        return g(self.obs), g(self.act), g(self.rew), g(self.nxt)


@torch.no_grad()
def evaluate_policy(actor, starts: torch.Tensor, steps: int = 200) -> torch.Tensor:
    """Mean undiscounted return of each member's deterministic policy from the Pendulum states `starts`
    [n, 2] (every member from the same starts); [R]."""
    R, n = actor_runs(actor), starts.size(0)
    env = BatchedPendulum(R * n, device=starts.device)
    obs = env.reset(starts.repeat(R, 1)).view(R, n, -1)
    total = torch.zeros(R, n, device=starts.device)
    for _ in range(steps):
        a = actor(obs, "eval")
        obs, r, _ = env.step(a.reshape(-1))
        obs, total = obs.view(R, n, -1), total + r.view(R, n)
    return total.mean(-1)


def actor_runs(actor) -> int:
    return next(actor.parameters()).size(0)


@torch.no_grad()
def recalibrate(actor, buffers: ReplayBuffers, batches: int, batch: int, commit=None, generator=None) -> list:
    """Re-BN: exact pooled statistics of `batches` replay batches for every BN layer (written into the
    moving statistics of the members flagged in commit; default the CaRe members). Returns [(mean, var)]."""
    actor.start_recalibration()
    for _ in range(batches):
        obs = buffers.sample(batch, generator)[0]
        actor(obs, "recal")
    return actor.finish_recalibration(commit)


def td3(actor, critic1, critic2, lrs: torch.Tensor, env_steps: int, start_steps: int = 1000, batch: int = 256,
        gamma: float = 0.99, tau: float = 0.005, expl_noise: float = 0.1, policy_noise: float = 0.2,
        noise_clip: float = 0.5, policy_freq: int = 2, recal: torch.Tensor | None = None, recal_every: int = 5000,
        recal_batches: int = 100, eval_every: int = 1000, on_eval=None, generator=None) -> ReplayBuffers:
    """Train R TD3 agents on R Pendulums in place. critic_i map [R, B, obs+act] -> [R, B, 1]. on_eval(step,
    actor, buffers) is called every `eval_every` environment steps. Returns the replay buffers."""
    R, dev = lrs.numel(), lrs.device
    a_max = MAX_TORQUE
    env = BatchedPendulum(R, device=dev, generator=generator)
    obs = env.reset()
    buffers = ReplayBuffers(R, env_steps, obs.size(-1), 1, device=dev)
    actor_t, critic1_t, critic2_t = copy.deepcopy(actor), copy.deepcopy(critic1), copy.deepcopy(critic2)
    opt_a = torch.optim.Adam(actor.parameters(), lr=1.0)
    opt_c = torch.optim.Adam([*critic1.parameters(), *critic2.parameters()], lr=1.0)
    sa = lambda s, a: torch.cat([s, a], -1)    # noqa: E731
    for t in range(env_steps):
        with torch.no_grad():
            if t < start_steps:
                a = (2 * torch.rand(R, 1, generator=generator, device=dev) - 1) * a_max
            else:
                noise = torch.randn(R, 1, generator=generator, device=dev) * expl_noise * a_max
                a = (actor(obs[:, None], "eval")[:, 0] + noise).clamp(-a_max, a_max)
        nxt, r, done = env.step(a[:, 0])
        buffers.add(obs, a, r, nxt)
        obs = env.reset() if done else nxt
        if t >= start_steps:
            s, a_b, r_b, s2 = buffers.sample(batch, generator)
            with torch.no_grad():
                eps = (torch.randn(R, batch, 1, generator=generator, device=dev) * policy_noise * a_max).clamp(
                    -noise_clip * a_max, noise_clip * a_max)
                a2 = (actor_t(s2, "eval") + eps).clamp(-a_max, a_max)
                y = r_b + gamma * torch.minimum(critic1_t(sa(s2, a2)), critic2_t(sa(s2, a2)))
            loss = (critic1(sa(s, a_b)) - y).pow(2).mean((1, 2)) + (critic2(sa(s, a_b)) - y).pow(2).mean((1, 2))
            opt_c.zero_grad(set_to_none=True)
            loss.sum().backward()
            member_step(opt_c, lrs)
            if (t - start_steps + 1) % policy_freq == 0:
                actor_loss = -critic1(sa(s, actor(s, "train"))).mean((1, 2))
                opt_a.zero_grad(set_to_none=True)
                actor_loss.sum().backward()
                member_step(opt_a, lrs)
                _soft_update(critic1_t, critic1, tau)
                _soft_update(critic2_t, critic2, tau)
                _soft_update(actor_t, actor, tau)
        if recal is not None and bool(recal.any()) and (t + 1) % recal_every == 0:
            recalibrate(actor, buffers, recal_batches, batch, recal, generator)
        if on_eval is not None and (t + 1) % eval_every == 0:
            on_eval(t + 1, actor, buffers)
    return buffers
