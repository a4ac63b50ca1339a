"""Colored-MNIST environments, built from any 28x28 grayscale image set with 10 classes.

Arjovsky, Bottou, Gulrajani & Lopez-Paz, "Invariant Risk Minimization", arXiv 1907.02893 (Sec. 5.2);
official code github.com/facebookresearch/InvariantRiskMinimization (`code/colored_mnist/main.py`,
`make_environment`), which the Fishr and Hessian-alignment CMNIST scripts copy unchanged. Each
environment e is made as that function does, in the same order of random draws:

    image  <- image[::2, ::2]                          2x subsampled, 28x28 -> 14x14
    y      <- [class < 5] XOR Bernoulli(0.25)          binary label with 25% label noise
    colour <- y XOR Bernoulli(e)                       colour agrees with y with probability 1 - e
    x      <- (image in channel `colour`, zeros in the other) / 255          [2, 14, 14]

so the shape predicts y with at most 75% accuracy in every environment, while the colour predicts
it with probability 1 - e, which the environment sets: 0.8 and 0.9 in the two training
environments, 0.1 in the test environment. `grayscale=True` keeps the image in both channels
(the "gray test" environment). The official split (`colored_mnist_envs`): the first 50,000
training images, shuffled, alternate between the training environments; the last 10,000 make the
test and gray-test environments (each with its own label-noise draw).
"""
from __future__ import annotations

import torch

TRAIN_ENVS = (0.2, 0.1)   # colour-flip probabilities of the official training environments
TEST_ENV = 0.9


def colored_environment(images: torch.Tensor, classes: torch.Tensor, e: float, label_noise: float = 0.25,
                        grayscale: bool = False, generator: torch.Generator | None = None) -> dict:
    """One environment: {'x' float32 [n, 2, 14, 14] in [0, 1], 'y' float32 [n, 1] in {0, 1},
    'colour' int64 [n], 'e'}. images uint8 [n, 28, 28]; classes int [n] in 0..9."""
    if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(classes):
        raise ValueError(f"need images [n, 28, 28] and classes [n], got {tuple(images.shape)} and {tuple(classes.shape)}")
    n = len(classes)
    flip = lambda p: (torch.rand(n, generator=generator) < p).long()   # torch_bernoulli, CPU draws
    y = (classes.long() < 5).long() ^ flip(label_noise)
    colour = y ^ flip(e)
    small = images[:, ::2, ::2].float() / 255.0
    x = torch.stack([small, small], dim=1)
    if not grayscale:
        x[torch.arange(n), 1 - colour] = 0.0
    return {"x": x, "y": y.float()[:, None], "colour": colour, "e": e}


def colored_mnist_envs(images: torch.Tensor, classes: torch.Tensor, generator: torch.Generator | None = None,
                       n_train: int = 50_000, n_test: int = 10_000, train_envs=TRAIN_ENVS, test_env: float = TEST_ENV,
                       label_noise: float = 0.25) -> dict:
    """The official split of one restart: {'train': [env, env], 'test': env, 'gray': env}.

    The first n_train images are shuffled (a fresh permutation per generator state) and dealt to the
    training environments in turn ([::2], [1::2]); the n_test images after them make the test
    environment and, with a fresh label-noise draw, the grayscale test environment."""
    if len(images) < n_train + n_test:
        raise ValueError(f"need {n_train + n_test} images, got {len(images)}")
    perm = torch.randperm(n_train, generator=generator)
    x_tr, c_tr = images[:n_train][perm], classes[:n_train][perm]
    k = len(train_envs)
    train = [colored_environment(x_tr[i::k], c_tr[i::k], e, label_noise, generator=generator)
             for i, e in enumerate(train_envs)]
    x_te, c_te = images[n_train:n_train + n_test], classes[n_train:n_train + n_test]
    test = colored_environment(x_te, c_te, test_env, label_noise, generator=generator)
    gray = colored_environment(x_te, c_te, test_env, label_noise, grayscale=True, generator=generator)
    return {"train": train, "test": test, "gray": gray}
