"""Optimizers: each a pure update function plus a thin torch.optim.Optimizer.

`make_optimizer(name, model, lr, ...)` builds any of them from the registry `OPTIMIZERS`. The
matrix optimizers (Muon family, SinkGD, AuON) update hidden matrices and hand embeddings, the
head, gains and routers to AdamW at `adamw_lr`; Conda projects hidden matrices and gives the rest
its own unprojected Adam, as its official code does; AdamW, Lion and Stable-SPAM update everything.
Submodules load on first use (reprolib/_lazy.py says why).
"""
import importlib

import torch

from .._lazy import attach, exports_of

_EXPORTS = exports_of({
    ".adamw": ["adamw_update"],
    ".adaprelora": ["AdaPreLoRA", "RiemannianAdamW", "adafactor_direction", "adafactor_stats",
                    "adaprelora_factor_step", "riemannian_precondition"],
    ".auon": ["AuON", "auon_update"],
    ".conda": ["Conda", "conda_basis", "conda_update"],
    ".constrained": ["ConstrainedOptimizer"],
    ".fal": ["client_losses", "fal_round"],
    ".density_control": ["densify_adc", "densify_steepest", "fit_splats", "offspring", "split_then_train"],
    ".fira": ["Fira", "fira_scaling", "norm_growth_limit"],
    ".galore": ["GaLore", "galore_basis", "galore_direction", "lowrank_param_groups", "project", "project_back"],
    ".grad_noise": ["GradientNoise", "add_gradient_noise", "noise_std"],
    ".groups": ["weight_decay_groups"],
    ".lion": ["Lion", "lion_update"],
    ".member_step": ["member_step"],
    ".muon": ["LR_SCALES", "Muon", "is_hidden_matrix", "muon_lr_scale", "muon_param_groups", "muon_update"],
    ".normuon": ["NorMuon", "normuon_update"],
    ".precision_ilp": ["random_plan", "solve_precision_ilp"],
    ".radius_clip": ["RadiusClip"],
    ".saf": ["MESA", "OutputBank", "SAF", "trajectory_kl"],
    ".sam": ["SAM", "grad_norm", "sam_loss", "sam_perturbation"],
    ".sinkgd": ["SinkGD", "sinkhorn_normalize"],
    ".spectral_constraints": ["PROJECTIONS", "power_iteration", "project_rms", "soft_cap_coupling", "soft_cap_map",
                              "spectral_hammer", "spectral_normalize", "spectral_soft_cap", "svd_clip"],
    ".stable_spam": ["StableSPAM", "cosine_scale", "stable_spam_update"],
    ".sven": ["Sven", "residual_jacobian", "sven_step", "truncated_pinv_solve"],
    ".tract": ["TrActConv2d", "TrActLinear", "tract", "tract_grad"],
})
attach(__name__, _EXPORTS)

# name -> (module, class); the matrix optimizers take muon_param_groups and need adamw_lr
MATRIX_OPTIMIZERS = {"muon": (".muon", "Muon"), "normuon": (".normuon", "NorMuon"),
                     "sinkgd": (".sinkgd", "SinkGD"), "auon": (".auon", "AuON")}
OPTIMIZERS = ("adamw", "lion", "stable_spam", "conda", *MATRIX_OPTIMIZERS)


def _load(module: str, name: str):
    return getattr(importlib.import_module(module, __name__), name)


def make_optimizer(name: str, model: torch.nn.Module, lr: float, adamw_lr: float | None = None,
                   weight_decay: float = 0.0, **kwargs) -> torch.optim.Optimizer:
    """Build optimizer `name` for `model`. kwargs go to the optimizer (e.g. betas, lr_scale);
    the matrix optimizers need `adamw_lr` for the non-matrix parameters (AdamW betas (0.9, 0.95))."""
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "adamw":
        kwargs.setdefault("betas", (0.9, 0.95))
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=all(p.is_cuda for p in params), **kwargs)
    if name == "lion":
        return _load(".lion", "Lion")(params, lr=lr, weight_decay=weight_decay, **kwargs)
    if name == "stable_spam":
        return _load(".stable_spam", "StableSPAM")(params, lr=lr, weight_decay=weight_decay, **kwargs)
    muon_param_groups = _load(".muon", "muon_param_groups")
    if name == "conda":
        groups = muon_param_groups(model, lr, lr, weight_decay, weight_decay)
        for g in groups:
            g["use_conda"] = g.pop("use_muon")
        return _load(".conda", "Conda")(groups, lr=lr, **kwargs)
    if name in MATRIX_OPTIMIZERS:
        if adamw_lr is None:
            raise ValueError(f"{name} needs adamw_lr for the non-matrix parameters")
        kwargs.setdefault("betas", (0.9, 0.95))
        return _load(*MATRIX_OPTIMIZERS[name])(muon_param_groups(model, lr, adamw_lr, weight_decay), lr=lr, **kwargs)
    raise ValueError(f"unknown optimizer {name!r}; valid: {OPTIMIZERS}")


__all__ = ["OPTIMIZERS", "MATRIX_OPTIMIZERS", "make_optimizer", *_EXPORTS]
