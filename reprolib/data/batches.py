"""Language-model batches: next-token windows over a 1-D token stream.

For a start i the pair is x = tokens[i : i+T], y = tokens[i+1 : i+T+1], so
y[t] is the target for the prefix x[:t+1]. Windows are gathered with one
index matrix i[:, None] + arange(T+1), never a Python loop, and stay on
tokens.device so a CUDA-resident corpus is never copied to the host.
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
