"""reprolib.layers.mask_swap: swap_masks moves every mask exactly where score_mask.update_masks does."""
import copy

import pytest
import torch
from torch import nn

from reprolib.layers import ScoreMasked, magnitude_masks, score_masked, swap_mask, swap_masks, topk_mask, update_masks
from reprolib.models import SmallCNN


@pytest.mark.parametrize("swap", [lambda sm, rate: sm.update_mask(rate), swap_mask], ids=["update_mask", "swap_mask"])
def test_short_restriction_closed_form(swap):
    # the reference ScoreMasked.update_mask and the fast swap_mask on one hand-worked example
    layer = nn.Linear(10, 1)
    mask = torch.zeros(1, 10, dtype=torch.bool)
    mask[0, :4] = True                                  # k = 4
    sm = ScoreMasked(layer, mask, "magnitude")
    with torch.no_grad():                               # kept 0..3, pruned 4..9
        sm.scores.copy_(torch.tensor([[0.1, 0.2, 0.9, 0.95, 0.5, 0.6, 0.7, 0.3, 1.2, 0.05]]))
    # top-4 = {8, 3, 2, 6}: incoming pruned {8 (1.2), 6 (0.7)}, outgoing kept {0 (0.1), 1 (0.2)}; c = 2
    n = swap(sm, 0.4)                                   # ceil(0.8) = 1 pair: best in (8), worst out (0)
    assert int(n) == 1 and sm.mask[0].nonzero().flatten().tolist() == [1, 2, 3, 8]
    n = swap(sm, 1.0)                                   # the remaining pair: 6 in, 1 out
    assert int(n) == 1 and sm.mask[0].nonzero().flatten().tolist() == [2, 3, 6, 8]
    assert torch.equal(sm.mask, topk_mask(sm.scores, 4))
    assert int(swap(sm, 1.0)) == 0                      # at the top-k: nothing to swap


@pytest.mark.parametrize("kind", ["magnitude", "random"])
def test_swap_masks_equals_update_masks_with_ties(kind):
    names = ["conv1", "conv2", "head.1"]
    for trial, sparsity in enumerate((0.0, 0.5, 0.9, 0.98)):
        torch.manual_seed(trial)
        a = SmallCNN(1, 10, (4, 8), 16)
        score_masked(a, magnitude_masks(a, sparsity, names), kind, torch.Generator().manual_seed(trial))
        b = copy.deepcopy(a)
        g = torch.Generator().manual_seed(100 + trial)
        for it, rate in enumerate((1.0, 0.983, 0.5, 0.1, 0.0, 1.0, 0.7, 1e-8, 0.017, 1.0)):
            for pa, pb in zip(a.parameters(), b.parameters()):
                if pa.shape == pb.shape and pa.requires_grad:
                    step = 0.03 * torch.randn(pa.shape, generator=g)
                    with torch.no_grad():
                        pa.add_(step)
                        if it % 2:                      # many equal scores: ties at the threshold and among candidates
                            pa.copy_((pa * 20).round() / 20)
                        pb.copy_(pa)
            na, nb = update_masks(a, rate), swap_masks(b, rate)
            assert na.dtype == nb.dtype and int(na) == int(nb)
            for ma, mb in zip(a.modules(), b.modules()):
                if isinstance(ma, ScoreMasked):
                    assert torch.equal(ma.mask, mb.mask) and int(mb.mask.sum()) == mb.k


def test_swap_masks_without_masked_layers():
    assert int(swap_masks(nn.Linear(3, 2))) == 0


def test_swap_mask_rejects_rates_outside_0_1():
    sm = ScoreMasked(nn.Linear(4, 2), torch.rand(2, 4) < 0.5, "random", torch.Generator().manual_seed(0))
    with pytest.raises(ValueError):
        swap_mask(sm, 1.5)
