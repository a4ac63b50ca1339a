"""Optimizers: each a pure update function plus a thin torch.optim.Optimizer.

`make_optimizer(name, model, lr, ...)` builds any of them from the registry `OPTIMIZERS`, with
the Muon family's non-matrix parameters (embeddings, head, gains, routers) on AdamW.
"""
import torch

from .adamw import adamw_update
from .muon import LR_SCALES, Muon, is_hidden_matrix, muon_lr_scale, muon_param_groups, muon_update
from .normuon import NorMuon, normuon_update

OPTIMIZERS = ("adamw", "muon", "normuon")


def make_optimizer(name: str, model: torch.nn.Module, lr: float, adamw_lr: float | None = None,
                   weight_decay: float = 0.0, betas=(0.9, 0.95), **kwargs) -> torch.optim.Optimizer:
    """AdamW on every parameter, or a Muon-family optimizer on hidden matrices + AdamW (adamw_lr)."""
    if name == "adamw":
        params = [p for p in model.parameters() if p.requires_grad]
        fused = all(p.is_cuda for p in params)
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=fused)
    if name in ("muon", "normuon"):
        if adamw_lr is None:
            raise ValueError(f"{name} needs adamw_lr for the non-matrix parameters")
        groups = muon_param_groups(model, lr, adamw_lr, weight_decay)
        cls = Muon if name == "muon" else NorMuon
        return cls(groups, lr=lr, betas=betas, **kwargs)
    raise ValueError(f"unknown optimizer {name!r}; valid: {OPTIMIZERS}")


__all__ = ["OPTIMIZERS", "LR_SCALES", "Muon", "NorMuon", "adamw_update", "is_hidden_matrix",
           "make_optimizer", "muon_lr_scale", "muon_param_groups", "muon_update", "normuon_update"]
