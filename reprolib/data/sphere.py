"""Points on the unit sphere with labels from a random teacher network, and client partitions for
federated learning (IID, or non-IID by k-means clusters of the inputs).

The data assumptions of over-parameterised convergence theorems (Du et al. 2019; Li, Song & Yang,
"Federated Adversarial Learning: A Framework with Convergence Analysis", ICML 2023,
https://arxiv.org/abs/2208.03635): ||x_i|| = 1, |y_i| <= 1, and every pair of inputs at least
delta apart (delta-separability). With delta > 2 rho the l2 balls of radius rho around the inputs are
disjoint, so a robust training loss of zero is attainable.
"""
from __future__ import annotations

import torch


def separated_sphere(n: int, d: int, min_dist: float, generator: torch.Generator | None = None,
                     max_draws: int = 1_000_000) -> torch.Tensor:
    """n points uniform on the unit sphere S^{d-1}, drawn in turn and kept only when at least min_dist from
    every point kept so far (rejection sampling: the delta-separability assumption). [n, d], float64."""
    kept = torch.empty(0, d, dtype=torch.float64)
    drawn = 0
    while len(kept) < n:
        if drawn > max_draws:
            raise ValueError(f"could not place {n} points {min_dist} apart on S^{d - 1} in {max_draws} draws")
        z = torch.randn(d, dtype=torch.float64, generator=generator)
        z = z / z.norm()
        drawn += 1
        if len(kept) == 0 or torch.cdist(z[None], kept).min() >= min_dist:
            kept = torch.cat([kept, z[None]])
    return kept


def teacher_labels(x: torch.Tensor, width: int = 8, generator: torch.Generator | None = None) -> torch.Tensor:
    """y = a random two-layer ReLU teacher sum_j b_j relu(v_j . x), b_j = +-1, v_j ~ N(0, I), centred and
    scaled so that max |y| = 1. [n]"""
    v = torch.randn(width, x.shape[1], dtype=x.dtype, generator=generator)
    b = torch.randint(0, 2, (width,), generator=generator).to(x.dtype) * 2 - 1
    y = torch.relu(x @ v.T) @ b
    y = y - y.mean()
    return y / y.abs().max()


def sphere_teacher(n: int, d: int, min_dist: float, teacher_width: int = 8, seed: int = 0,
                   dtype=torch.float32, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """A delta-separated sample on the unit sphere and its teacher labels: (x [n, d], y [n])."""
    gen = torch.Generator().manual_seed(seed)
    x = separated_sphere(n, d, min_dist, gen)
    y = teacher_labels(x, teacher_width, gen)
    return x.to(dtype=dtype, device=device), y.to(dtype=dtype, device=device)


def kmeans(x: torch.Tensor, k: int, iters: int = 50, generator: torch.Generator | None = None) -> torch.Tensor:
    """Lloyd's k-means from k distinct random points; returns each point's cluster [n] (an emptied cluster
    is re-seeded with the point farthest from its centre)."""
    centres = x[torch.randperm(len(x), generator=generator)[:k]].clone()
    assign = torch.zeros(len(x), dtype=torch.long)
    for _ in range(iters):
        dist = torch.cdist(x, centres)
        assign = dist.argmin(1)
        for c in range(k):
            members = x[assign == c]
            if len(members):
                centres[c] = members.mean(0)
            else:
                far = dist.min(1).values.argmax()
                centres[c], assign[far] = x[far], c
    return torch.cdist(x, centres).argmin(1)


def partition_clients(x: torch.Tensor, n_clients: int, scheme: str = "iid", seed: int = 0) -> torch.Tensor:
    """Each point's client [n]. 'iid': a random split into equal shares; 'kmeans': one k-means cluster of the
    inputs per client (non-IID: each client sees one region of the sphere, in unequal numbers)."""
    gen = torch.Generator().manual_seed(seed)
    x = x.detach().cpu().double()
    if scheme == "iid":
        return torch.randperm(len(x), generator=gen) % n_clients
    if scheme == "kmeans":
        return kmeans(x, n_clients, generator=gen)
    raise ValueError(f"unknown partition scheme {scheme!r}; valid: 'iid', 'kmeans'")


def client_tensors(x: torch.Tensor, y: torch.Tensor, assign: torch.Tensor, n_clients: int):
    """The clients' data side by side, padded to the largest client: (x [C, n_max, d], y [C, n_max],
    weight [C, n_max]) with weight 1/n_c on client c's points and 0 on padding, so that
    (weight * per-point loss).sum(-1) is each client's mean loss."""
    assign = assign.to(x.device)
    sizes = torch.bincount(assign, minlength=n_clients)
    if (sizes == 0).any():
        raise ValueError(f"a client has no data: sizes {sizes.tolist()}")
    n_max = int(sizes.max())
    xc = x.new_zeros(n_clients, n_max, x.shape[1])
    yc = y.new_zeros(n_clients, n_max)
    wc = x.new_zeros(n_clients, n_max)
    for c in range(n_clients):
        idx = (assign == c).nonzero().squeeze(1)
        xc[c, :len(idx)], yc[c, :len(idx)], wc[c, :len(idx)] = x[idx], y[idx], 1.0 / len(idx)
    return xc, yc, wc


def client_spread(x: torch.Tensor, assign: torch.Tensor, n_clients: int) -> float:
    """Heterogeneity of a partition: mean over clients of || client mean input - overall mean input ||."""
    mu = x.mean(0)
    return float(torch.stack([(x[assign.to(x.device) == c].mean(0) - mu).norm() for c in range(n_clients)]).mean())
