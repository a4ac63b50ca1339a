"""A reservoir replay buffer for continual learning (Vitter's Algorithm R, as in experience replay).

Chaudhry et al., "On Tiny Episodic Memories in Continual Learning" (2019), arXiv 1902.10486; Buzzega et
al., "Dark Experience for General Continual Learning" (NeurIPS 2020), arXiv 2004.07211 (the `Buffer`
of their mammoth framework, which the IDER code builds on).

Algorithm R over a stream x_0, x_1, ... with a memory of M slots: item i (0-based) goes to slot i while
i < M; afterwards j ~ U{0, ..., i} and the item replaces slot j if j < M. After N items every item is in
memory with probability M / N: the memory is a uniform sample of the stream without replacement.

The slot draws run on the host (a torch.Generator on the CPU), so adding a batch never waits for the
device; the stored tensors live on `device`.
"""
from __future__ import annotations

import torch


class ReservoirBuffer:
    def __init__(self, capacity: int, device=None, seed: int = 0):
        if capacity < 1:
            raise ValueError("a reservoir needs at least one slot")
        self.capacity, self.device = int(capacity), torch.device(device or "cpu")
        self.seen = 0                       # items of the stream offered so far (N)
        self.x = self.y = None
        self.gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return min(self.seen, self.capacity)

    def slots(self, n: int) -> torch.Tensor:
        """Algorithm R's slot for each of the next n items (-1: not stored); advances the stream count."""
        i = torch.arange(self.seen, self.seen + n)
        j = (torch.rand(n, generator=self.gen, dtype=torch.float64) * (i + 1)).long()   # j ~ U{0..i}
        slot = torch.where(i < self.capacity, i, torch.where(j < self.capacity, j, -1))
        self.seen += n
        return slot

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if self.x is None:
            self.x = torch.zeros((self.capacity, *x.shape[1:]), dtype=x.dtype, device=self.device)
            self.y = torch.zeros((self.capacity, *y.shape[1:]), dtype=y.dtype, device=self.device)
        slot = self.slots(len(x))
        keep = slot >= 0
        # two items of one batch drawing the same slot: the later one wins, as if added one by one
        last = torch.zeros(self.capacity, dtype=torch.long).fill_(-1)
        last.scatter_reduce_(0, slot[keep], torch.arange(len(x))[keep], reduce="amax")
        dest = torch.nonzero(last >= 0).squeeze(1)
        src = last[dest]
        if len(dest):
            dest_d, src_d = dest.to(self.device), src.to(x.device)
            self.x[dest_d] = x[src_d].to(self.device)
            self.y[dest_d] = y[src_d].to(self.device)

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n stored items drawn uniformly without replacement (all of them if fewer are stored)."""
        if len(self) == 0:
            raise ValueError("the buffer is empty")
        idx = torch.randperm(len(self), generator=self.gen)[:n].to(self.device)
        return self.x[idx], self.y[idx]
