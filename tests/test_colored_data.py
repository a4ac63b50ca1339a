"""Tests for reprolib.data.colored: the official make_environment, transcribed, as the oracle, and the
statistics each environment is built to have."""
import math

import pytest
import torch

from reprolib.data.colored import colored_environment, colored_mnist_envs


def fake_images(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8), torch.randint(0, 10, (n,), generator=g)


def official_make_environment(images, labels, e, grayscale=False):
    """InvariantRiskMinimization code/colored_mnist/main.py (as copied by cmnist_HGP.py), on the CPU."""
    def torch_bernoulli(p, size):
        return (torch.rand(size) < p).float()

    def torch_xor(a, b):
        return (a - b).abs()
    images = images.reshape((-1, 28, 28))[:, ::2, ::2]
    labels = (labels < 5).float()
    labels = torch_xor(labels, torch_bernoulli(0.25, len(labels)))
    colors = torch_xor(labels, torch_bernoulli(e, len(labels)))
    images = torch.stack([images, images], dim=1)
    if not grayscale:
        images[torch.tensor(range(len(images))), (1 - colors).long(), :, :] *= 0
    return {'images': (images.float() / 255.), 'labels': labels[:, None]}


@pytest.mark.parametrize("e,grayscale", [(0.2, False), (0.9, False), (0.9, True)])
def test_environment_equals_the_official_construction(e, grayscale):
    x, c = fake_images(300)
    torch.manual_seed(11)
    ref = official_make_environment(x.clone(), c.clone(), e, grayscale)
    ours = colored_environment(x, c, e, grayscale=grayscale, generator=torch.Generator().manual_seed(11))
    assert torch.equal(ours["x"], ref["images"]) and torch.equal(ours["y"], ref["labels"])
    assert ours["x"].shape == (300, 2, 14, 14) and ours["x"].dtype == torch.float32


def test_environment_statistics():
    x, c = fake_images(20_000, seed=1)
    env = colored_environment(x, c, 0.1, generator=torch.Generator().manual_seed(0))
    y, colour, n = env["y"][:, 0].long(), env["colour"], 20_000
    se = lambda p: 4 * math.sqrt(p * (1 - p) / n)
    flipped = (y != (c < 5).long()).float().mean().item()
    assert abs(flipped - 0.25) < se(0.25)                               # label noise
    assert abs((colour == y).float().mean().item() - 0.9) < se(0.1)     # colour agrees with y w.p. 1 - e
    lit = env["x"].flatten(2).abs().sum(-1) > 0                         # [n, 2]: which channel holds the image
    nonblank = x[:, ::2, ::2].flatten(1).sum(1) > 0
    assert torch.equal(lit[nonblank, 1], colour[nonblank].bool()) and not (lit[:, 0] & lit[:, 1]).any()
    assert torch.equal(env["x"][torch.arange(n), colour], x[:, ::2, ::2].float() / 255)


def test_gray_environment_keeps_both_channels_and_bad_shapes_raise():
    x, c = fake_images(50)
    gray = colored_environment(x, c, 0.9, grayscale=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(gray["x"][:, 0], gray["x"][:, 1])
    with pytest.raises(ValueError):
        colored_environment(x[:, :14], c, 0.1)


def test_official_split_is_disjoint_deterministic_and_shuffled_per_seed():
    x, c = fake_images(600, seed=2)
    make = lambda s: colored_mnist_envs(x, c, torch.Generator().manual_seed(s), n_train=400, n_test=200)
    a, b, other = make(0), make(0), make(1)
    assert [len(e["y"]) for e in a["train"]] == [200, 200] and len(a["test"]["y"]) == len(a["gray"]["y"]) == 200
    assert a["train"][0]["e"] == 0.2 and a["train"][1]["e"] == 0.1 and a["test"]["e"] == 0.9
    assert all(torch.equal(p["x"], q["x"]) for p, q in zip(a["train"], b["train"]))
    assert not torch.equal(a["train"][0]["x"], other["train"][0]["x"])
    # the test images are the held-out ones, unshuffled, and the gray env draws its own label noise
    small = x[400:, ::2, ::2].float() / 255
    assert torch.equal(a["gray"]["x"][:, 0], small) and torch.equal(other["gray"]["x"][:, 0], small)
    assert not torch.equal(a["test"]["y"], a["gray"]["y"])
    train_imgs = torch.cat([e["x"].amax(1) for e in a["train"]])   # the lit channel, [400, 14, 14]
    key = lambda t: sorted(map(bytes, (t * 255).round().to(torch.uint8).flatten(1).numpy()))
    assert key(train_imgs) == key(x[:400, ::2, ::2].float() / 255)   # a permutation of the first 400
