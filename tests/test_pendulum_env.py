"""The batched torch Pendulum against Gymnasium's Pendulum-v1 (test-only oracle)."""
import math

import numpy as np
import pytest
import torch

from reprolib.envs import BatchedPendulum, angle_normalize, pendulum_obs, pendulum_step

gym = pytest.importorskip("gymnasium")


def test_steps_match_gymnasium():
    rng = np.random.default_rng(0)
    env = gym.make("Pendulum-v1")
    for episode in range(4):
        obs, _ = env.reset(seed=episode)
        state = torch.tensor(env.unwrapped.state, dtype=torch.float64)[None]
        torch.testing.assert_close(pendulum_obs(state)[0], torch.tensor(obs, dtype=torch.float64), atol=1e-6, rtol=0)
        for t in range(200):
            u = rng.uniform(-3, 3)          # beyond the torque limit too: both clip it
            obs, r, terminated, truncated, _ = env.step(np.array([u], dtype=np.float32))
            state, reward = pendulum_step(state, torch.tensor([u], dtype=torch.float64))
            # gymnasium steps in float32 action / float64 state; its obs is float32
            torch.testing.assert_close(state[0], torch.tensor(env.unwrapped.state, dtype=torch.float64),
                                       atol=1e-5, rtol=0)
            state = torch.tensor(env.unwrapped.state, dtype=torch.float64)[None]   # no drift between the two
            assert reward.item() == pytest.approx(r, abs=1e-4)
            assert not terminated
            assert truncated == (t == 199)


def test_batched_env_resets_and_truncates():
    g = torch.Generator().manual_seed(0)
    env = BatchedPendulum(1000, generator=g, dtype=torch.float64)
    obs = env.reset()
    th, thdot = env.state.unbind(-1)
    assert th.abs().max() <= math.pi and thdot.abs().max() <= 1.0
    assert th.std() > 1.5 and thdot.std() > 0.5          # uniform on [-pi, pi] x [-1, 1]
    assert obs.shape == (1000, 3)
    for t in range(200):
        obs, reward, done = env.step(torch.zeros(1000))
        assert done == (t == 199)
    assert env.state[:, 1].abs().max() <= 8.0
    assert (reward <= 0).all()


def test_angle_normalize():
    x = torch.tensor([-math.pi, 0.0, math.pi - 1e-6, 3 * math.pi + 0.5, -7.0])
    y = angle_normalize(x)
    assert (y >= -math.pi).all() and (y < math.pi).all()
    torch.testing.assert_close(torch.cos(y), torch.cos(x), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.sin(y), torch.sin(x), atol=1e-5, rtol=0)
