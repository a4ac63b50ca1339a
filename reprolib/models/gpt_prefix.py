"""The answer-token loss of reprolib.models.GPT on short problems with shared prefixes, without the
work the loss cannot see.

Problems such as `a, op, b, =` (modular arithmetic, the answer predicted at `=`) are sequences whose
first n tokens come from a small set of Q distinct prefixes (`a, op`: p x #ops of them) and whose loss
is taken at the last position only. Two facts of a pre-norm causal GPT make most of its forward pass
redundant for such a batch:
  1. the states at positions < n depend on the prefix alone (causal attention), so they can be
     computed once per distinct prefix (Q sequences of n tokens) and gathered into the batch;
  2. in the last block the MLP output at positions other than the last reaches only logits that the
     loss ignores, so the experts run at the last position only there.
answer_forward does exactly this. It returns the last position's logits and the MoE load-balancing
loss summed over the blocks, both equal to GPT.forward's: the router runs at every position of every
sequence (the prefix positions' routing is gathered from the prefix table), so the load-balancing
statistics f_i and P_i are the same means over all (sequence, position) pairs. Gradients equal
those of the plain forward up to float rounding (a prefix's copies in the batch have their gradients
summed by the gather's backward instead of inside the weight-gradient matmuls). The attention of
every block still runs on the whole sequence (prefix states gathered, then the suffix), so its
kernels are those of the plain forward; its outputs at the prefix positions are dropped.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .gpt import MoE


def moe_routing(mlp: MoE, x: torch.Tensor):
    """MoE.forward's routing of x (..., d): the router softmax, the renormalised top-k gates
    (zero outside the top-k) and the 0/1 routed mask, all (..., E)."""
    probs = mlp.router(x).float().softmax(-1)
    top_p, top_i = probs.topk(mlp.cfg.top_k, dim=-1)
    gates = torch.zeros_like(probs).scatter(-1, top_i, top_p / top_p.sum(-1, keepdim=True))
    routed = torch.zeros_like(probs).scatter(-1, top_i, 1.0)
    return probs, gates, routed


def moe_experts(mlp: MoE, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """MoE.forward's output for x (b, t, d) with gates (b, t, E): every expert, gate-weighted."""
    hidden = F.silu(torch.einsum("btd,ehd->bteh", x, mlp.w1)) * torch.einsum("btd,ehd->bteh", x, mlp.w3)
    return torch.einsum("bteh,edh,bte->btd", hidden, mlp.w2, gates.type_as(x))


def moe_aux(mlp: MoE, probs: torch.Tensor, routed: torch.Tensor) -> torch.Tensor:
    """The Switch load-balancing loss of MoE.forward from (b, t, E) probs and routed mask."""
    f = routed.mean(dim=(0, 1)) / mlp.cfg.top_k
    return mlp.cfg.n_experts * (f * probs.mean(dim=(0, 1))).sum()


def _mlp(block, u, last_only: bool):
    """Block MLP on u (b, t, d): (output at every position, or at the last only when last_only;
    probs; routed). probs and routed are None for a dense MLP."""
    if not isinstance(block.mlp, MoE):
        return block.mlp(u[:, -1:] if last_only else u)[0], None, None
    probs, gates, routed = moe_routing(block.mlp, u)
    if last_only:
        u, gates = u[:, -1:], gates[:, -1:]
    return moe_experts(block.mlp, u, gates), probs, routed


def answer_forward(model, prefixes: torch.Tensor, prefix_id: torch.Tensor, suffix: torch.Tensor):
    """GPT `model` on the sequences cat(prefixes[prefix_id], suffix, dim=1): prefixes (Q, n) the
    distinct prefix tokens, prefix_id (B,) each sequence's prefix, suffix (B, m) its remaining tokens.
    Returns (logits of the last position (B, V), the summed MoE load-balancing loss: GPT.aux_loss)."""
    if any(block.post for block in model.blocks):
        raise ValueError("answer_forward needs norm_position 'pre' or 'none'")
    n = prefixes.size(1)
    if n + suffix.size(1) > model.cfg.seq_len:
        raise ValueError(f"sequence of {n + suffix.size(1)} tokens exceeds seq_len={model.cfg.seq_len}")
    hp = model.tok_emb(prefixes)             # (Q, n, d): prefix-table states
    h = model.tok_emb(suffix)                # (B, m, d): the batch's suffix states
    aux = 0.0
    last = len(model.blocks) - 1
    for i, block in enumerate(model.blocks):
        hp_in = hp
        xp = hp + block.attn(block.norm1(hp))
        x = h + block.attn(block.norm1(torch.cat([hp_in[prefix_id], h], 1)))[:, n:]
        yp, probs_p, routed_p = _mlp(block, block.norm2(xp), last_only=False)
        y, probs, routed = _mlp(block, block.norm2(x), last_only=i == last)
        if probs is not None:
            aux = aux + moe_aux(block.mlp, torch.cat([probs_p[prefix_id], probs], 1),
                                torch.cat([routed_p[prefix_id], routed], 1))
        else:
            aux = aux + x.new_zeros(())
        hp = xp + yp
        h = x[:, -1:] + y if i == last else x + y
    return model.lm_head(model.norm_f(h[:, -1])), aux
