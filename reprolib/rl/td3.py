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
from ..kernels.graphs import CapturedCall


def _soft_update(target, online, tau: float) -> None:
    with torch.no_grad():
        pairs = [(t, p) for t, p in zip(target.parameters(), online.parameters())]
        pairs += [(t, p) for (name, t), (_, p) in zip(target.named_buffers(), online.named_buffers())
                  if name.endswith(("moving_mean", "moving_var"))]
        torch._foreach_lerp_([t for t, _ in pairs], [p for _, p in pairs], tau)   # one launch, t.lerp_(p, tau) each


@torch.no_grad()
def _member_step(optimizer: torch.optim.Optimizer, params: list, rates: list) -> None:
    """optim.member_step (p_r <- p0_r + rates[r] (p1_r - p0_r)) as a few multi-tensor launches: rates[i] is
    the per-member rate expanded to params[i]'s shape; the same arithmetic, element by element."""
    before = torch._foreach_mul(params, 1.0)
    optimizer.step()
    diff = torch._foreach_sub(params, before)
    torch._foreach_addcmul_(before, rates, diff)
    torch._foreach_copy_(params, before)


class _Replayed:
    """fn() run eagerly, or on CUDA captured once in a graph (kernels.CapturedCall: a few eager calls on a
    side stream, then capture) and replayed: the same kernels with one launch. fn reads static input
    tensors that the caller fills and writes its results to tensors it allocates (on replay, the same
    ones). `fresh()` runs before every eager call (and before the capture): gradients that fn's backward
    creates must start from None there, so that the captured backward allocates them and later replays
    rewrite them. If the capture fails, every later call is eager."""

    def __init__(self, fn, device: torch.device, enabled: bool, fresh=None):
        self.call, self.fresh = CapturedCall(fn, device, enabled=enabled), fresh

    def __call__(self) -> None:
        c = self.call
        if c.graph is None and self.fresh is not None:
            self.fresh()
        if not (c.enabled and c.graph is None and c.calls >= c.warmup):
            return c()
        try:
            c()                                    # the capture (then one replay)
        except Exception as e:                     # run eagerly from here on
            print(f"td3: CUDA graph capture failed ({str(e).splitlines()[0]}); running eagerly")
            torch.cuda.synchronize()
            c.enabled, c.graph = False, None
            if self.fresh is not None:
                self.fresh()
            c()


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
        recal_batches: int = 100, eval_every: int = 1000, on_eval=None, generator=None,
        graphs: bool = True) -> ReplayBuffers:
    """Train R TD3 agents on R Pendulums in place. critic_i map [R, B, obs+act] -> [R, B, 1]. on_eval(step,
    actor, buffers) is called every `eval_every` environment steps. Returns the replay buffers.

    Speed, not arithmetic: the random draws, sampling and optimizer steps run eagerly as written; the
    deterministic parts of a step (acting, the critic loss with its TD target and gradients, the actor
    loss and its gradients) read static tensors and, on CUDA with graphs=True, are replayed as captured
    CUDA graphs (one launch instead of hundreds); on the CPU they are the same eager calls. Nothing
    inside a step waits for the GPU."""
    R, dev = lrs.numel(), lrs.device
    a_max = MAX_TORQUE
    env = BatchedPendulum(R, device=dev, generator=generator)
    obs = env.reset()
    buffers = ReplayBuffers(R, env_steps, obs.size(-1), 1, device=dev)
    actor_t, critic1_t, critic2_t = copy.deepcopy(actor), copy.deepcopy(critic1), copy.deepcopy(critic2)
    opt_a = torch.optim.Adam(actor.parameters(), lr=1.0)
    opt_c = torch.optim.Adam([*critic1.parameters(), *critic2.parameters()], lr=1.0)
    rates = lambda ps: [lrs.view(-1, *[1] * (p.dim() - 1)).expand_as(p).contiguous() for p in ps]   # noqa: E731
    params_a, params_c = list(actor.parameters()), [*critic1.parameters(), *critic2.parameters()]
    rates_a, rates_c = rates(params_a), rates(params_c)
    sa = lambda s, a: torch.cat([s, a], -1)    # noqa: E731
    do_recal = recal is not None and bool(recal.any())   # read once: no host sync inside the loop
    # static inputs of the replayed parts, and their outputs
    S_obs = torch.zeros(R, 1, obs.size(-1), device=dev)
    S, A, Rw, S2 = (torch.zeros(R, batch, d, device=dev) for d in (obs.size(-1), 1, 1, obs.size(-1)))
    EPS, out = torch.zeros(R, batch, 1, device=dev), {}

    def act():
        with torch.no_grad():
            out["a"] = actor(S_obs, "eval")[:, 0]

    def critic_grads():
        with torch.no_grad():
            a2 = (actor_t(S2, "eval") + EPS).clamp(-a_max, a_max)
            y = Rw + gamma * torch.minimum(critic1_t(sa(S2, a2)), critic2_t(sa(S2, a2)))
        loss = (critic1(sa(S, A)) - y).pow(2).mean((1, 2)) + (critic2(sa(S, A)) - y).pow(2).mean((1, 2))
        loss.sum().backward()

    def actor_grads():
        critic1.requires_grad_(False)          # gradients for the actor only (the same values)
        try:
            actor_loss = -critic1(sa(S, actor(S, "train"))).mean((1, 2))
            actor_loss.sum().backward()
        finally:
            critic1.requires_grad_(True)

    graphs = graphs and dev.type == "cuda"
    act_step = _Replayed(act, dev, graphs)
    critic_step = _Replayed(critic_grads, dev, graphs, fresh=lambda: opt_c.zero_grad(set_to_none=True))
    actor_step = _Replayed(actor_grads, dev, graphs, fresh=lambda: opt_a.zero_grad(set_to_none=True))
    for t in range(env_steps):
        with torch.no_grad():
            if t < start_steps:
                a = (2 * torch.rand(R, 1, generator=generator, device=dev) - 1) * a_max
            else:
                noise = torch.randn(R, 1, generator=generator, device=dev) * expl_noise * a_max
                S_obs.copy_(obs[:, None])
                act_step()
                a = (out["a"] + noise).clamp(-a_max, a_max)
        nxt, r, done = env.step(a[:, 0])
        buffers.add(obs, a, r, nxt)
        obs = env.reset() if done else nxt
        if t >= start_steps:
            for static, x in zip((S, A, Rw, S2), buffers.sample(batch, generator)):
                static.copy_(x)
            with torch.no_grad():
                EPS.copy_((torch.randn(R, batch, 1, generator=generator, device=dev) * policy_noise * a_max).clamp(
                    -noise_clip * a_max, noise_clip * a_max))
            critic_step()
            _member_step(opt_c, params_c, rates_c)
            if (t - start_steps + 1) % policy_freq == 0:
                actor_step()
                _member_step(opt_a, params_a, rates_a)
                _soft_update(critic1_t, critic1, tau)
                _soft_update(critic2_t, critic2, tau)
                _soft_update(actor_t, actor, tau)
        if do_recal and (t + 1) % recal_every == 0:
            recalibrate(actor, buffers, recal_batches, batch, recal, generator)
        if on_eval is not None and (t + 1) % eval_every == 0:
            on_eval(t + 1, actor, buffers)
    return buffers
