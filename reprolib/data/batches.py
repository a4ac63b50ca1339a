"""Batches. Language models: next-token windows over a 1-D token stream.

For a start i the pair is x = tokens[i : i+T], y = tokens[i+1 : i+T+1], so
y[t] is the target for the prefix x[:t+1]. Windows are gathered with one
index matrix i[:, None] + arange(T+1), never a Python loop, and stay on
tokens.device so a CUDA-resident corpus is never copied to the host.

SeedBatches: shuffled mini-batches for a stack of runs, one data order per seed.
"""
import torch
from einops import rearrange
from torch import Tensor


def _check_len(tokens: Tensor, seq_len: int) -> int:
    if tokens.ndim != 1:
        raise ValueError(f"expected 1-D tokens, got shape {tuple(tokens.shape)}")
    n = tokens.numel()
    if n < seq_len + 1:
        raise ValueError(f"{n} tokens are too few for one window of seq_len={seq_len} (need {seq_len + 1})")
    return n


def _same_device(a: torch.device, b: torch.device) -> bool:
    # 'cuda' and 'cuda:0' name the same device when one index is unset
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def _windows(tokens: Tensor, i: Tensor, seq_len: int) -> tuple[Tensor, Tensor]:
    w = tokens[i[:, None] + torch.arange(seq_len + 1, device=tokens.device)]
    return w[:, :-1], w[:, 1:]


def lm_batch(tokens: Tensor, batch_size: int, seq_len: int,
             generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """batch_size windows at uniform random starts; x, y have shape [batch_size, seq_len]."""
    n = _check_len(tokens, seq_len)
    if generator is not None and not _same_device(generator.device, tokens.device):
        raise ValueError(f"generator is on {generator.device} but tokens are on {tokens.device}")
    i = torch.randint(0, n - seq_len, (batch_size,), generator=generator, device=tokens.device)
    return _windows(tokens, i, seq_len)


def lm_eval_batches(tokens: Tensor, batch_size: int, seq_len: int, n_batches: int) -> list[tuple[Tensor, Tensor]]:
    """n_batches fixed batches of evenly spaced windows spanning the whole stream (deterministic)."""
    n = _check_len(tokens, seq_len)
    i = torch.linspace(0, n - seq_len - 1, batch_size * n_batches, dtype=torch.float64).round().long()
    x, y = _windows(tokens, i.to(tokens.device), seq_len)
    x, y = (rearrange(z, "(k b) t -> k b t", k=n_batches) for z in (x, y))
    return list(zip(x.unbind(0), y.unbind(0)))


class SeedBatches:
    """Mini-batches for a stack of runs trained side by side (weights stacked [R, ...]).

    Every seed draws its own random order of (x, y) each epoch; run r reads the order of seed index
    seed_of[r], so runs of one seed see the same data in the same order. batches(k) gives step k's
    x [R, batch_size, ...] and y [R, batch_size]; an epoch is len(x) // batch_size steps.
    """

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, seed_of, generator: torch.Generator):
        if len(x) < batch_size:
            raise ValueError(f"{len(x)} examples are too few for one batch of {batch_size}")
        self.x, self.y, self.batch_size, self.generator = x, y, batch_size, generator
        self.seed_of = torch.as_tensor(seed_of, device=x.device)
        self.n_seeds, self.steps_per_epoch = int(self.seed_of.max()) + 1, len(x) // batch_size
        self.epoch, self.perm = -1, None

    def __call__(self, step: int) -> tuple[Tensor, Tensor]:
        epoch, i = divmod(step, self.steps_per_epoch)
        if epoch != self.epoch:
            self.epoch = epoch
            self.perm = torch.rand(self.n_seeds, len(self.x), generator=self.generator,
                                   device=self.x.device).argsort(1)
        idx = self.perm[self.seed_of, i * self.batch_size:(i + 1) * self.batch_size]
        return self.x[idx], self.y[idx]
