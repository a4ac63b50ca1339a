"""Score-masked layers (reprolib.layers.score_mask) against closed forms and torch.nn.utils.prune."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from reprolib.layers import (ScoreMasked, magnitude_masks, mask_iou, score_masked, short_restriction_rate,
                             topk_mask, update_masks)
from reprolib.models import SmallCNN


def test_topk_mask_is_exact():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(7, 13, generator=g)
    for k in (0, 1, 30, 91):
        m = topk_mask(s, k)
        assert m.shape == s.shape and int(m.sum()) == k
        if 0 < k < s.numel():   # every kept score beats every dropped one
            assert s[m].min() > s[~m].max()
    assert torch.equal(topk_mask(s, 5).flatten().nonzero().flatten().sort().values,
                       s.flatten().argsort(descending=True)[:5].sort().values)


@pytest.mark.parametrize("conv", [False, True])
def test_forward_and_straight_through_gradient(conv):
    torch.manual_seed(0)
    layer = nn.Conv2d(3, 4, 3, padding=1) if conv else nn.Linear(6, 5)
    x = torch.randn(2, 3, 5, 5) if conv else torch.randn(8, 6)
    mask = torch.rand(layer.weight.shape) < 0.4
    sm = ScoreMasked(layer, mask, "magnitude")
    # closed form: the layer with W ⊙ m, and dL/dS = dL/d(W ⊙ m) ⊙ W
    wm = (layer.weight.detach() * mask).requires_grad_(True)
    ref = F.conv2d(x, wm, layer.bias, padding=1) if conv else F.linear(x, wm, layer.bias)
    out = sm(x)
    torch.testing.assert_close(out, ref)
    (out ** 2).sum().backward()
    (ref ** 2).sum().backward()
    torch.testing.assert_close(sm.scores.grad, wm.grad * layer.weight.detach())
    assert sm.scores.grad[~mask].abs().sum() > 0   # pruned entries get a gradient too (straight-through)


def test_magnitude_masks_match_torch_prune():
    torch.manual_seed(1)
    a, b = SmallCNN(1, 10, (4, 8), 16), SmallCNN(1, 10, (4, 8), 16)
    b.load_state_dict(a.state_dict())
    names = ["conv1", "conv2", "head.1"]   # the last linear layer stays dense, as the official code
    masks = magnitude_masks(a, 0.9, names)
    mods = dict(b.named_modules())
    prune.global_unstructured([(mods[n], "weight") for n in names], prune.L1Unstructured, amount=0.9)
    for n in names:
        assert torch.equal(masks[n], mods[n].weight_mask.bool())


def test_update_mask_keeps_k_and_rate_one_is_topk():
    torch.manual_seed(2)
    model = SmallCNN(1, 10, (4, 8), 16)
    names = ["conv1", "conv2", "head.1"]
    masks = magnitude_masks(model, 0.8, names)
    w0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    layers = score_masked(model, masks, "random", torch.Generator().manual_seed(0))
    ks = {n: int(masks[n].sum()) for n in names}
    assert {n: l.k for n, l in layers.items()} == ks
    for rate in (0.3, 0.0, 1.0):
        with torch.no_grad():
            for l in layers.values():
                l.scores.add_(0.05 * torch.randn_like(l.scores))
        update_masks(model, rate)
        assert {n: int(l.mask.sum()) for n, l in layers.items()} == ks
    for l in layers.values():                           # rate 1 (last) is the plain top-k
        assert torch.equal(l.mask, topk_mask(l.scores, l.k))
    for n, p in model.named_parameters():               # the wrapped layers share the pretrained weights
        if not n.endswith("scores"):
            assert torch.equal(p, w0[n.replace(".layer", "")])


def test_rate_and_iou():
    assert short_restriction_rate(0, 10) == 1.0 and abs(short_restriction_rate(10, 10)) < 1e-12
    assert math.isclose(short_restriction_rate(5, 10), 0.5)
    a = torch.tensor([1, 1, 0, 0], dtype=torch.bool)
    b = torch.tensor([1, 0, 1, 0], dtype=torch.bool)
    assert mask_iou(a, b) == 1 / 3 and mask_iou(a, a) == 1.0
