"""Modular arithmetic tables, the classic grokking task (Power et al., arXiv 2201.02177), with several
operations in one vocabulary so that each operation is a data group of its own.

Every example is the 4-token sequence  a, <op>, b, =  and its label c = op(a, b) mod p, for every pair
(a, b) in [0, p)^2 and every operation. Each operation's p^2 pairs are split on their own into a training
part (train_frac of them), and the held-out rest into a selection part (select_frac of it, for tuning)
and a test part (reported): each group has the same share in every split.

Tokens: 0..p-1 are the numbers, p + i is operation i, p + len(ops) is "=".
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

OPERATIONS = {
    "x+y": lambda a, b, p: (a + b) % p,
    "x-y": lambda a, b, p: (a - b) % p,
    "x*y": lambda a, b, p: (a * b) % p,
    "x2+y2": lambda a, b, p: (a * a + b * b) % p,
    "x3+xy": lambda a, b, p: (a ** 3 + a * b) % p,
}


@dataclass
class ModularData:
    x: torch.Tensor          # (N, 4) tokens  a, op, b, =
    y: torch.Tensor          # (N,) labels in [0, p)
    group: torch.Tensor      # (N,) operation index
    train: torch.Tensor      # indices into x of each split
    select: torch.Tensor
    test: torch.Tensor
    p: int
    ops: tuple

    @property
    def vocab_size(self) -> int:
        return self.p + len(self.ops) + 1

    def to(self, device) -> "ModularData":
        moved = {k: getattr(self, k).to(device) for k in ("x", "y", "group", "train", "select", "test")}
        return ModularData(**moved, p=self.p, ops=self.ops)


def modular_arithmetic(p: int = 59, ops=("x+y",), train_frac: float = 0.5, select_frac: float = 0.5,
                       seed: int = 0) -> ModularData:
    """All (a, b) pairs of every operation in `ops` (names of OPERATIONS), split per operation."""
    unknown = [o for o in ops if o not in OPERATIONS]
    if unknown:
        raise ValueError(f"unknown operations {unknown}; valid: {list(OPERATIONS)}")
    if not 0 < train_frac < 1 or not 0 <= select_frac <= 1:
        raise ValueError(f"train_frac={train_frac} must be in (0, 1), select_frac={select_frac} in [0, 1]")
    rng = np.random.default_rng(seed)
    a, b = (v.ravel() for v in np.meshgrid(np.arange(p), np.arange(p), indexing="ij"))
    xs, ys, gs, splits = [], [], [], {"train": [], "select": [], "test": []}
    n_train = round(train_frac * p * p)
    n_select = round(select_frac * (p * p - n_train))
    for i, op in enumerate(ops):
        offset = i * p * p
        xs.append(np.stack([a, np.full_like(a, p + i), b, np.full_like(a, p + len(ops))], 1))
        ys.append(OPERATIONS[op](a, b, p))
        gs.append(np.full_like(a, i))
        order = offset + rng.permutation(p * p)
        splits["train"].append(order[:n_train])
        splits["select"].append(order[n_train:n_train + n_select])
        splits["test"].append(order[n_train + n_select:])
    cat = lambda parts: torch.from_numpy(np.concatenate(parts)).long()
    return ModularData(cat(xs), cat(ys), cat(gs), *(cat(splits[k]) for k in ("train", "select", "test")),
                       p=p, ops=tuple(ops))
