"""Reinforcement-learning algorithms on batched torch environments (reprolib.envs).

    grid_vi.py    value iteration on an angle x speed grid (bilinear interpolation): a reference V*
    dynamics.py   learned dynamics: one network, deterministic and probabilistic (PETS/MBPO) ensembles
    fitted_q.py   model-based fitted Q iteration on a stack of Q-networks; greedy returns, value
                  gradients and the Bellman-operator gap under true and learned dynamics
    td3.py        TD3 on a stack of agents (one Pendulum, replay buffer and lr each), with CaRe-BN's
                  re-calibration of the actor's BN statistics from the replay buffer

Submodules load on first use (reprolib/_lazy.py says why).
"""
from .._lazy import attach, exports_of

_EXPORTS = exports_of({
    ".grid_vi": ["AngleSpeedGrid", "value_iteration"],
    ".dynamics": ["bounded_logvar", "dynamics_loss", "fit_dynamics", "sample_ensemble", "split_output"],
    ".td3": ["ReplayBuffers", "evaluate_policy", "recalibrate", "td3"],
    ".fitted_q": ["bellman_gap", "fitted_q_iteration", "greedy_return", "state_values", "value_gradient_norm"],
})
attach(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
