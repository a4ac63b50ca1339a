"""Environments for reinforcement learning, written as batched torch tensors (many environments stepped
as one tensor, on any device, no simulator package at run time).

    pendulum.py   the classic-control Pendulum-v1 (Gymnasium's dynamics, reward, start states and
                  200-step time limit), tested step by step against gymnasium

Submodules load on first use (reprolib/_lazy.py says why).
"""
from .._lazy import attach, exports_of

_EXPORTS = exports_of({
    ".pendulum": ["BatchedPendulum", "angle_normalize", "pendulum_obs", "pendulum_reward", "pendulum_step"],
})
attach(__name__, _EXPORTS)
__all__ = list(_EXPORTS)
