"""SNIP's precision ILP against exhaustive enumeration of every plan, and the random plans' contract
(within budget, maximal, varied)."""
import itertools

import numpy as np
import pytest

from reprolib.optim.precision_ilp import random_plan, solve_precision_ilp

COSTS = np.array([1.0, 0.5, 0.25])


def instance(seed, L=7):
    rng = np.random.default_rng(seed)
    shares = rng.integers(1, 12, L).astype(float)
    shares /= shares.sum()
    costs = shares[:, None] * COSTS[None, :]
    scores = np.c_[np.zeros(L), rng.exponential(1e-4, L), rng.exponential(1e-3, L)]
    scores[rng.random((L, 3)) < 0.15] *= -1           # estimates can be negative (a noisy first-order term)
    return scores, costs


def enumerate_best(scores, costs, budget):
    L, P = scores.shape
    best = np.inf
    for plan in itertools.product(range(P), repeat=L):
        idx = (np.arange(L), np.array(plan))
        if costs[idx].sum() <= budget + 1e-12:
            best = min(best, scores[idx].sum())
    return best


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("budget", [0.26, 0.35, 0.5, 0.8])
def test_ilp_optimum_equals_enumeration(seed, budget):
    scores, costs = instance(seed)
    choice = solve_precision_ilp(scores, costs, budget)
    idx = (np.arange(len(choice)), choice)
    assert costs[idx].sum() <= budget + 1e-9
    assert scores[idx].sum() == pytest.approx(enumerate_best(scores, costs, budget), rel=1e-9, abs=1e-15)


def test_ilp_edges():
    scores, costs = instance(0)
    assert (solve_precision_ilp(scores, costs, 1.0) == scores.argmin(1)).all()   # no constraint binds
    assert (solve_precision_ilp(np.abs(scores), costs, 0.25) == 2).all()          # only the cheapest fits
    with pytest.raises(ValueError):
        solve_precision_ilp(scores, costs, 0.2)
    with pytest.raises(ValueError):
        solve_precision_ilp(scores[:, :2], costs, 0.5)


def test_random_plans_fit_are_maximal_and_vary():
    scores, costs = instance(3, L=10)
    seen = set()
    for s in range(40):
        choice = random_plan(costs, 0.35, np.random.default_rng(s))
        spent = costs[np.arange(10), choice].sum()
        assert spent <= 0.35 + 1e-12
        for l in range(10):   # maximal: no single costlier option still fits
            for p in range(3):
                if costs[l, p] > costs[l, choice[l]]:
                    assert spent - costs[l, choice[l]] + costs[l, p] > 0.35
        seen.add(tuple(choice))
    assert len(seen) > 20
    again = random_plan(costs, 0.35, np.random.default_rng(7))
    assert (again == random_plan(costs, 0.35, np.random.default_rng(7))).all()   # reproducible by seed
