"""Choosing a precision for every layer under a FLOP budget: SNIP's integer linear program, and the
random plans it is compared with.

SNIP: An Adaptive Mixed Precision Framework for Subbyte Large Language Model Training
(Pan, Yang, Yang, Mahlke, ASPLOS 2026), https://arxiv.org/abs/2602.01410 : with x_{l,p} = 1 when
layer l runs at precision p, D_{l,p} the estimated quality loss of that choice and c_{l,p} its cost,

    minimise    sum_{l,p} D_{l,p} x_{l,p}
    subject to  sum_p x_{l,p} = 1                  for every layer l   (one precision per layer)
                sum_{l,p} c_{l,p} x_{l,p} <= B      (the efficiency target)
                x_{l,p} in {0, 1}

(a multiple-choice knapsack). scipy.optimize.milp (HiGHS branch and bound) solves it exactly at the
size of a layer-wise plan; tests/test_precision_ilp.py checks the optimum against enumeration.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp


def solve_precision_ilp(scores, costs, budget: float) -> np.ndarray:
    """Optimal choice per layer: scores and costs are [L, P] arrays (layer, option); returns the
    option index of each layer (length L). Raises if no plan fits the budget."""
    D, c = np.asarray(scores, np.float64), np.asarray(costs, np.float64)
    if D.shape != c.shape or D.ndim != 2:
        raise ValueError(f"scores {D.shape} and costs {c.shape} must be [layers, options] arrays of one shape")
    L, P = D.shape
    if c.min(1).sum() > budget * (1 + 1e-12):
        raise ValueError(f"no plan fits: the cheapest costs {c.min(1).sum():.6g} > budget {budget:.6g}")
    one_each = LinearConstraint(np.kron(np.eye(L), np.ones(P)), 1, 1)      # sum_p x_{l,p} = 1
    within = LinearConstraint(c.reshape(1, -1), -np.inf, budget)            # sum c x <= B
    res = milp(D.ravel(), constraints=[one_each, within], integrality=np.ones(L * P), bounds=Bounds(0, 1),
               options=dict(mip_rel_gap=0.0))
    if res.x is None:
        raise RuntimeError(f"the ILP solver failed: {res.message}")
    choice = res.x.reshape(L, P).argmax(1)
    if c[np.arange(L), choice].sum() > budget + 1e-9 * max(1.0, abs(budget)):   # beyond the solver's tolerance
        raise RuntimeError(f"the ILP solver returned a plan over budget ({c[np.arange(L), choice].sum():.9g})")
    return choice


def random_plan(costs, budget: float, rng: np.random.Generator) -> np.ndarray:
    """A random plan that uses the budget as a solver would: every layer starts at its cheapest
    option; then, while some (layer, costlier option) still fits the budget, one such pair is
    drawn uniformly and taken. Returns the option index of each layer."""
    c = np.asarray(costs, np.float64)
    choice = c.argmin(1)
    while True:
        spent = c[np.arange(len(c)), choice].sum()
        fits = [(l, p) for l in range(len(c)) for p in range(c.shape[1])
                if c[l, p] > c[l, choice[l]] and spent - c[l, choice[l]] + c[l, p] <= budget * (1 + 1e-12)]
        if not fits:
            return choice
        l, p = fits[rng.integers(len(fits))]
        choice[l] = p
