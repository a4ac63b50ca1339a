"""Attention entropy and its lower bound (Zhai et al., "Stabilizing Transformer Training by
Preventing Attention Entropy Collapse", ICML 2023, arXiv 2303.06296).

For an attention matrix A (rows: queries i, columns: keys j, each row a softmax of logits z_i):

    Ent(A_i) = -sum_j A_ij log A_ij                          (the paper's attention entropy, nats)

averaged over query positions, heads and sequences to follow a layer through training. A causal
row i sees n = i + 1 keys, so its entropy is at most log n.

Lower bound (the paper's Theorem 3.1). If a row's n logits z satisfy ||z||_2 <= s, then with
beta = exp(-s sqrt(n / (n - 1))):

    Ent >= log(1 + (n - 1) beta) + s sqrt(n (n - 1)) beta / (1 + (n - 1) beta)

with equality for one logit a and n - 1 logits b, centred, with a - b = s sqrt(n / (n - 1)): the
minimal attainable entropy falls exponentially fast in s. The theorem takes s from the spectral norm
of the logit matrix (s <= sigma(W_K W_Q^T) ||X X^T||_2, since a row's norm is at most the matrix's);
softmax ignores a shift of z, so the centred norm ||z - mean(z)||_2 <= ||z||_2 gives the tightest s
for one row.
"""
import torch
from torch import Tensor, nn


def attention_logits(model: nn.Module, idx: Tensor) -> list[Tensor]:
    """Run `model` on token ids `idx` and return, for every attention module in forward order, the
    causal logits it computed on its input (its `logits(x)`: (b, h, t, t), -inf above the diagonal).
    Call it under torch.no_grad() and in eval mode when the model's state must not change."""
    from ..models.gpt import Attention

    captured, hooks = [], []
    for m in model.modules():
        if isinstance(m, Attention):
            hooks.append(m.register_forward_pre_hook(lambda mod, args: captured.append(mod.logits(args[0]))))
    try:
        model(idx)
    finally:
        for h in hooks:
            h.remove()
    return captured


def attention_entropy(logits: Tensor) -> Tensor:
    """Ent(A_i) of every row, nats: logits (..., t_q, t_k) with -inf at masked keys -> (..., t_q)."""
    p = (logits if logits.dtype == torch.float64 else logits.float()).softmax(-1)
    return -torch.special.xlogy(p, p).sum(-1)   # xlogy: a masked key (p = 0) adds 0


def row_logit_norm(logits: Tensor) -> Tensor:
    """||z_i - mean(z_i)||_2 of every row over its unmasked keys: (..., t_q, t_k) -> (..., t_q)."""
    z = logits if logits.dtype == torch.float64 else logits.float()
    seen = torch.isfinite(z)
    z = torch.where(seen, z, 0.0)
    mean = z.sum(-1, keepdim=True) / seen.sum(-1, keepdim=True)
    return torch.where(seen, z - mean, 0.0).norm(dim=-1)


def entropy_lower_bound(s, n):
    """The least entropy of a softmax over n logits with ||z||_2 <= s (Theorem 3.1; module
    docstring). s, n: numbers or tensors (broadcast); n = 1 gives 0."""
    s = torch.as_tensor(s, dtype=torch.float64)
    n = torch.as_tensor(n, dtype=torch.float64, device=s.device)
    m = (n - 1).clamp(min=0)
    gap = s * torch.sqrt(n / m.clamp(min=1))     # a - b for the centred two-level logits
    beta = torch.exp(-gap)                        # beta = exp(-s sqrt(n / (n - 1)))
    bound = torch.log1p(m * beta) + gap * m * beta / (1 + m * beta)
    return torch.where(n > 1, bound, 0.0)


def head_stats(logits: Tensor) -> dict:
    """Summaries of one causal layer's logits (b, h, t, t), per head: the mean entropy and mean
    centred row-logit norm over rows and sequences, and the least margin of any row's entropy over
    its Theorem 3.1 bound (n = i + 1 keys for row i); per sequence and head, the last row (n = t)."""
    z = logits.double()   # float64: near-uniform rows sit within rounding of the bound
    ent, s = attention_entropy(z), row_logit_norm(z)
    n = torch.arange(1, logits.size(-1) + 1, device=logits.device)
    margin = ent - entropy_lower_bound(s, n)
    return dict(entropy=ent.mean(dim=(0, 2)).float(), logit_norm=s.mean(dim=(0, 2)).float(),
                bound_margin=margin.amin(dim=(0, 2)).float(), last_row_norm=s[..., -1].float(),
                last_row_entropy=ent[..., -1].float())

