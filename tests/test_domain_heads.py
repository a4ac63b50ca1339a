"""DRM's heads, loss and test-time selection against hand computations; rotated domains against exact
rotations."""
import math

import pytest
import torch
import torch.nn.functional as F

from reprolib.data import rotate_images, rotated_domains
from reprolib.layers.swap import swap_modules
from reprolib.models import DomainHeads, SmallCNN, drm_loss, select_batch, select_sample, softmax_entropy


def test_rotate_identity_and_quarter_turn():
    x = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(rotate_images(x, 0), x, atol=1e-5, rtol=0)
    # a quarter turn maps pixel centres onto pixel centres: bilinear is exact, counter-clockwise on screen
    torch.testing.assert_close(rotate_images(x, 90), torch.rot90(x, 1, dims=(2, 3)), atol=1e-5, rtol=0)
    torch.testing.assert_close(rotate_images(rotate_images(x, 90), 90), torch.rot90(x, 2, dims=(2, 3)), atol=1e-5, rtol=0)


def test_rotation_keeps_a_centred_disc():
    yy, xx = torch.meshgrid(torch.arange(28) - 13.5, torch.arange(28) - 13.5, indexing="ij")
    disc = ((yy ** 2 + xx ** 2) < 8 ** 2).float()[None, None]
    r = rotate_images(disc, 37)
    assert (r - disc).abs()[..., 10:18, 10:18].max() < 1e-5      # the interior is rotation invariant
    assert abs(r.sum() - disc.sum()) / disc.sum() < 0.03          # the area is kept


def test_rotated_domains_disjoint():
    imgs = torch.arange(60, dtype=torch.uint8).view(60, 1, 1).expand(60, 28, 28).contiguous()
    doms = rotated_domains(imgs, torch.arange(60) % 10, angles=(0, 45, 90), n_per_domain=20,
                           generator=torch.Generator().manual_seed(0))
    ids = [set((d["x"][:, 0, 14, 14] * 255).round().long().tolist()) for d in doms]
    assert all(len(i) == 20 for i in ids) and not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert [d["angle"] for d in doms] == [0, 45, 90]
    with pytest.raises(ValueError):
        rotated_domains(imgs, torch.arange(60), angles=(0, 1, 2, 3), n_per_domain=20)


def test_heads_swap_into_smallcnn():
    m = SmallCNN(1, 10, (4, 8), 16)
    swap_modules(m, lambda n, _: n == "head.3", lambda n, old: DomainHeads(old.in_features, old.out_features, 3))
    assert m(torch.rand(5, 1, 28, 28)).shape == (4, 5, 10)


def test_drm_loss_closed_form():
    torch.manual_seed(0)
    logits, y = torch.randn(3, 7, 4), torch.randint(0, 4, (7,))
    domain = torch.tensor([0, 0, 0, 1, 1, 0, 1])
    ce = lambda i, m: -logits[i, m].log_softmax(-1)[torch.arange(int(m.sum())), y[m]].mean()
    m0, m1 = domain == 0, domain == 1
    want = ((ce(0, m0) + ce(2, m0)) / 2 + (ce(1, m1) + ce(2, m1)) / 2) / 2
    torch.testing.assert_close(drm_loss(logits, y, domain), want)
    # one source domain: the domain head and the all-domain head see the same data: ERM with two heads
    d0 = torch.zeros(7, dtype=torch.long)
    torch.testing.assert_close(drm_loss(logits[[0, 2]], y, d0), (F.cross_entropy(logits[0], y) + F.cross_entropy(logits[2], y)) / 2)


def test_entropy_closed_form():
    torch.testing.assert_close(softmax_entropy(torch.zeros(2, 5)), torch.full((2,), math.log(5)))
    p = torch.tensor([0.7, 0.2, 0.1])
    torch.testing.assert_close(softmax_entropy(p.log()), -(p * p.log()).sum())


def test_selection_hand_example():
    # head 0 confident on sample 0, head 1 confident on sample 1, head 2 (all-domain) uniform
    logits = torch.tensor([[[4.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 3.0]], [[0.0, 0.0], [0.0, 0.0]]])
    p, w = select_sample(logits, gamma=-1)
    torch.testing.assert_close(p, torch.stack([logits[0, 0].softmax(-1), logits[1, 1].softmax(-1)]))
    torch.testing.assert_close(w, torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    _, i = select_batch(logits)
    h = softmax_entropy(logits).mean(-1)
    assert i == int(h.argmin()) == 0              # a logit gap of 4 (head 0) beats one of 3 (head 1)
    # soft weights: w_i = H_i^-gamma / sum_j H_j^-gamma over all K+1 heads; the sum runs over the K domain heads
    H = softmax_entropy(logits)
    w_want = H.pow(-1.0) / H.pow(-1.0).sum(0)
    p_soft, w_soft = select_sample(logits, gamma=1.0)
    torch.testing.assert_close(w_soft, w_want)
    torch.testing.assert_close(w_soft.sum(0), torch.ones(2))
    torch.testing.assert_close(p_soft, w_want[0, :, None] * logits[0].softmax(-1) + w_want[1, :, None] * logits[1].softmax(-1))
    # gamma = 0: uniform weights 1/(K+1) on every head
    _, w0 = select_sample(logits, gamma=0.0)
    torch.testing.assert_close(w0, torch.full((3, 2), 1 / 3))


def test_drm_loss_blocks_matches_masked_loss():
    from reprolib.models.domain_heads import drm_loss_blocks
    torch.manual_seed(0)
    k, b = 4, 5
    logits, y = torch.randn(3, k + 1, k * b, 10, requires_grad=True), torch.randint(0, 10, (3, k * b))
    domain = torch.arange(k).repeat_interleave(b)
    want = torch.stack([drm_loss(logits[r], y[r], domain) for r in range(3)])
    got = drm_loss_blocks(logits, y)
    torch.testing.assert_close(got, want)
    g_want, = torch.autograd.grad(want.sum(), logits)
    g_got, = torch.autograd.grad(got.sum(), logits)
    torch.testing.assert_close(g_got, g_want)
    torch.testing.assert_close(drm_loss_blocks(logits[0], y[0]), want[0])
    with pytest.raises(ValueError):
        drm_loss_blocks(logits[:, :, :-1], y[:, :-1])
