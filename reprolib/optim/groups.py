"""Parameter groups for AdamW's decoupled weight decay.

The common GPT convention (nanoGPT, OLMo): decay every matrix (embeddings, projections, the head),
not the 1-D gains, shifts and scalars of norm layers. A module can name further parameters to decay
in a class attribute `decayed` (layers.SeeDNorm decays alpha and beta, as its paper does).
"""
import torch


def weight_decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """[{params: decayed, weight_decay}, {params: the rest, weight_decay: 0}] for torch.optim.AdamW:
    decayed are the trainable parameters with ndim >= 2 and those a module lists in `decayed`."""
    extra = {id(getattr(m, n)) for m in model.modules() for n in getattr(m, "decayed", ())}
    decay, keep, seen = [], [], set()
    for p in model.parameters():   # parameters() yields each shared Parameter once
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.ndim >= 2 or id(p) in extra else keep).append(p)
    return [dict(params=decay, weight_decay=weight_decay), dict(params=keep, weight_decay=0.0)]
