"""Essential sparsity (metrics/sparsity.py) against closed-form curves; the one-shot global magnitude
masks the notebook uses against torch.nn.utils.prune.global_unstructured (the official code's call)."""
import numpy as np
import pytest
import torch
from torch.nn.utils import prune

from reprolib import layers, metrics
from reprolib.models import GPT, GPTConfig

GRID = np.round(np.arange(0, 0.91, 0.05), 2)


def hinge(s, knee, a, b, p0=50.0):
    """P(s) = p0 - a s below the knee, then falling at rate b: a closed-form knee curve."""
    return np.where(s <= knee, p0 - a * s, p0 - a * knee - b * (s - knee))


@pytest.mark.parametrize("knee", [0.3, 0.45, 0.6])
def test_essential_sparsity_of_hinge(knee):
    # flat part drops 0.5 points (1% of 50) only at s = 1, so every grid point up to the knee is flat;
    # beyond it the drop grows by 2 points per 0.05, immediately above the 0.5-point budget
    p = hinge(GRID, knee, a=0.4, b=40.0)
    assert metrics.essential_sparsity(GRID, p) == pytest.approx(knee)
    before, after = metrics.drop_rates(GRID, p, knee, width=0.2)
    assert before == pytest.approx(0.4) and after == pytest.approx(40.0)


def test_budget_boundary_relative_and_absolute():
    p = 100.0 - 10.0 * GRID            # linear: drop(s) = 10 s points
    assert metrics.essential_sparsity(GRID, p, tol=0.01) == pytest.approx(0.1)      # 1 point allowed
    assert metrics.essential_sparsity(GRID, p, tol=3.0, relative=False) == pytest.approx(0.3)
    assert metrics.essential_sparsity(GRID, np.full_like(GRID, 7.0)) == pytest.approx(0.9)   # never drops


def test_flat_prefix_only():
    # an early drop beyond the budget ends the flat region even if the curve recovers later
    p = np.full_like(GRID, 50.0)
    p[3] = 40.0
    assert metrics.essential_sparsity(GRID, p) == pytest.approx(GRID[2])
    p[1] = 0.0                                   # the first pruned level already fails: s_ess = 0
    assert metrics.essential_sparsity(GRID, p) == 0.0
    assert metrics.drop_rates(GRID, p, 0.0)[0] == 0.0


def test_drop_rates_interpolate_and_clip():
    p = hinge(GRID, 0.8, a=0.0, b=20.0)
    before, after = metrics.drop_rates(GRID, p, 0.8, width=0.2)    # window clipped at 0.9
    assert before == pytest.approx(0.0) and after == pytest.approx(20.0)
    with pytest.raises(ValueError):
        metrics.essential_sparsity(GRID[1:], p[1:])


@pytest.mark.parametrize("sparsity", [0.1, 0.37, 0.8])
def test_magnitude_masks_match_torch_global_l1(sparsity):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=17, seq_len=8, n_layer=2, d_model=32, n_head=2))
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith("blocks.")]
    ours = layers.magnitude_masks(model, sparsity, names)
    mods = dict(model.named_modules())
    prune.global_unstructured([(mods[n], "weight") for n in names], pruning_method=prune.L1Unstructured,
                              amount=sparsity)
    total = sum(ours[n].numel() for n in names)
    assert sum(int((~ours[n]).sum()) for n in names) == round(sparsity * total)
    for n in names:
        assert torch.equal(ours[n], mods[n].weight_mask.bool())
