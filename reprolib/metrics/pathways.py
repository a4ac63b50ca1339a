"""Expert pathways of a mixture-of-experts GPT and the two training-data metrics of

    Where to find Grokking in LLM Pretraining? Monitor Memorization-to-Generalization without Test
    Ziyue Li, Chenrui Fan, Tianyi Zhou (ICLR 2026), https://arxiv.org/abs/2506.21551

A sample's pathway is its sequence of expert choices across the layers: at layer l the top-k experts
E_l (ids in ascending order), concatenated over l = 1..L into one string s of length L k.

    pathway distance     D = mean over pairs i < j of  Lev(s_i, s_j) / (L k)
                         (Levenshtein edit distance; lower: pathways shared between samples)
    pathway consistency  C = mean over samples and l = 1..L-1 of  cos(e_l, e_{l+1}),
                         e_l = sum_{i in E_l} g_{l,i} r_{l,i}
                         (g: the renormalised top-k gates, r_{l,i}: row i of layer l's router, the
                         expert's embedding in the residual stream; higher: smoother across layers)

router_trace reads the routing of reprolib.models.GPT(mlp="moe") through forward hooks on each
block's router, recomputing the gates exactly as MoE.forward does; the model is not modified.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class RouterTrace:
    ids: torch.Tensor      # (N, T, L, k) top-k expert ids, ascending within a layer
    gates: torch.Tensor    # (N, T, L, k) their renormalised gates, aligned with ids
    probs: torch.Tensor    # (N, T, L, E) router softmax
    routers: list          # L router weights (E, d): the experts' embeddings

    def at(self, position: int) -> "RouterTrace":
        """The trace of one token position: ids and gates (N, L, k)."""
        return RouterTrace(self.ids[:, position], self.gates[:, position], self.probs[:, position], self.routers)

    def expert_share(self) -> torch.Tensor:
        """(L, E): each expert's share of the routed (token, slot) pairs of its layer; rows sum to 1."""
        ids = self.ids.flatten(0, 1) if self.ids.dim() == 4 else self.ids   # (tokens, L, k)
        E = self.probs.size(-1)
        counts = F.one_hot(ids, E).sum(dim=(0, 2)).float()                 # (L, E)
        return counts / counts.sum(-1, keepdim=True)


@torch.no_grad()
def router_trace(model, idx: torch.Tensor) -> RouterTrace:
    """Run `model(idx)` and return every layer's routing at every position."""
    logits, handles = [], []
    routers = [block.mlp.router for block in model.blocks]
    for r in routers:
        handles.append(r.register_forward_hook(lambda mod, inp, out: logits.append(out)))
    try:
        model(idx)
    finally:
        for h in handles:
            h.remove()
    k = model.cfg.top_k
    probs = torch.stack([z.float().softmax(-1) for z in logits], dim=2)           # (N, T, L, E), as MoE.forward
    top_p, top_i = probs.topk(k, dim=-1)
    ids, order = top_i.sort(dim=-1)
    gates = (top_p / top_p.sum(-1, keepdim=True)).gather(-1, order)
    return RouterTrace(ids, gates, probs, [r.weight.detach().float() for r in routers])


def levenshtein(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Edit distance (insertions, deletions, substitutions, each cost 1) of each row pair: a (P, n),
    b (P, m) integer tensors -> (P,). The Wagner-Fischer recursion, vectorised over the pairs:
    d[i, j] = min(d[i-1, j] + 1, d[i, j-1] + 1, d[i-1, j-1] + [a_i != b_j])."""
    P, n = a.shape
    m = b.size(1)
    prev = torch.arange(m + 1, device=a.device).expand(P, m + 1)
    for i in range(1, n + 1):
        row = [torch.full((P,), i, device=a.device, dtype=prev.dtype)]
        for j in range(1, m + 1):
            sub = prev[:, j - 1] + (a[:, i - 1] != b[:, j - 1])
            row.append(torch.minimum(torch.minimum(prev[:, j], row[j - 1]) + 1, sub))
        prev = torch.stack(row, 1)
    return prev[:, m]


def pathway_strings(ids: torch.Tensor) -> torch.Tensor:
    """(N, L, k) expert ids -> (N, L k): each layer's ids in ascending order, layers concatenated."""
    return ids.sort(dim=-1).values.flatten(1)


def pathway_distance(ids: torch.Tensor, max_pairs: int | None = None, generator=None) -> float:
    """D: mean normalised edit distance between the pathways of all pairs of samples (or of
    `max_pairs` random pairs). ids: (N, L, k) at the monitored position."""
    s = pathway_strings(ids)
    i, j = torch.triu_indices(len(s), len(s), offset=1, device=s.device)
    if max_pairs is not None and len(i) > max_pairs:
        pick = torch.randperm(len(i), generator=generator, device=generator.device if generator else "cpu")[:max_pairs]
        i, j = i[pick.to(s.device)], j[pick.to(s.device)]
    return float(levenshtein(s[i], s[j]).float().mean() / s.size(1))


def pathway_consistency(ids: torch.Tensor, gates: torch.Tensor, routers, per_sample: bool = False):
    """C: mean over samples and consecutive layers of cos(e_l, e_{l+1}), e_l = sum_i g_{l,i} r_{l,i}.
    ids, gates: (N, L, k); routers: L tensors (E, d)."""
    W = torch.stack([r.float() for r in routers])                       # (L, E, d)
    L = W.size(0)
    rows = W[torch.arange(L, device=W.device)[None, :, None], ids]      # (N, L, k, d)
    e = torch.einsum("nlk,nlkd->nld", gates.float(), rows)
    cos = F.cosine_similarity(e[:, :-1], e[:, 1:], dim=-1).mean(1)     # (N,)
    return cos if per_sample else float(cos.mean())
