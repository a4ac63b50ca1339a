"""One-shot unstructured pruning of linear layers: masks from scores, calibration statistics read from
forward hooks, and SparseGPT's weight reconstruction.

Every pruner here prunes the same pattern: a fixed share of each output row of each weight (`row_masks`),
the per-output comparison group Wanda uses, so that methods differ only in which weights they keep.

SparseGPT (Frantar & Alistarh, "SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot",
ICML 2023, arXiv 2301.00774; official code github.com/IST-DASLab/sparsegpt, `sparsegpt.py`). For a layer
with weight W [out, in] and calibration inputs X [tokens, in], with H = 2 X^T X + damping, it prunes the
columns from left to right. Pruning weight w_ic sets it to zero and spreads the error over the row's
not-yet-processed columns by the Optimal Brain Surgeon update restricted to them,

    delta_i,F = - w_ic / [H_F^-1]_cc * [H_F^-1]_c,F,      F = {c, c+1, ..., in-1}          (paper, eq. 3)

and the rows of the upper Cholesky factor of H^-1 give every [H_F^-1]_c,F at once (paper, Sec. 3.2). The
mask is chosen lazily per block of `blocksize` columns, by the OBS saliency w^2 / [H^-1]_cc^2 (the
official code's `tmp`); here per row within each block, so every row keeps exactly its share.
Defaults follow the official code: blocksize 128, damping 1% of mean(diag H).
`sequential_prune` runs a pruner block by block: the calibration inputs of block l come from blocks
0..l-1 already pruned, as the official SparseGPT and Wanda code do.
"""
from __future__ import annotations

import torch


def row_masks(scores: dict, sparsity: float) -> dict:
    """{name: bool mask}: keep the highest-scoring (1 - sparsity) share of each output row (ties: lower index)."""
    out = {}
    for n, s in scores.items():
        k = s.shape[1] - int(round(sparsity * s.shape[1]))          # kept per row
        keep = torch.zeros_like(s, dtype=torch.bool)
        keep.scatter_(1, s.float().topk(k, dim=1).indices, True)
        out[n] = keep
    return out


@torch.no_grad()
def apply_masks(weights: dict, masks: dict) -> None:
    """W <- W * mask in place."""
    for n, w in weights.items():
        w.mul_(masks[n].to(w.dtype))


@torch.no_grad()
def input_grams(modules: dict, run_model) -> dict:
    """{name: X^T X (float64)} of each module's input over every token that run_model() feeds it."""
    grams, handles = {}, []

    def hook(name):
        def fn(mod, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
            grams[name] = grams.get(name, 0) + x.T @ x
        return fn

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in modules.items()]
    try:
        run_model()
    finally:
        for h in handles:
            h.remove()
    return grams


@torch.no_grad()
def sparsegpt_prune(W: torch.Tensor, H: torch.Tensor, sparsity: float, blocksize: int = 128,
                    percdamp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT on one layer (module docstring): returns (pruned and updated W, keep mask). H: 2 X^T X (any
    positive multiple of it gives the same result)."""
    W = W.detach().clone().double()
    H = H.detach().clone().double()
    cols = W.shape[1]
    dead = H.diagonal() == 0                     # inputs never active: their weights cannot matter
    H[dead, dead] = 1
    W[:, dead] = 0
    H += percdamp * H.diagonal().mean() * torch.eye(cols, dtype=H.dtype, device=H.device)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    keep = torch.ones_like(W, dtype=torch.bool)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1, Hinv1 = W[:, i1:i2].clone(), Hinv[i1:i2, i1:i2]
        n = i2 - i1
        saliency = W1.pow(2) / Hinv1.diagonal()[None, :].pow(2)
        n_prune = int(round(sparsity * n))
        prune1 = torch.zeros_like(W1, dtype=torch.bool)
        if n_prune:
            prune1.scatter_(1, saliency.topk(n_prune, dim=1, largest=False).indices, True)
        # Column by column, as the official code: err = (w - q) / d with q the pruned column (w where a weight is
        # kept, 0 where pruned), i.e. w / d where pruned and exactly 0 where kept. Views made once per block keep the
        # loop to four kernels per column, all rows at once.
        wcols, pcols = W1.split(1, dim=1), prune1.split(1, dim=1)     # [rows, 1] views, updated in place
        diag, hrows = Hinv1.diagonal().unbind(0), Hinv1.unbind(0)
        errs = []
        for i in range(n):
            err = torch.where(pcols[i], wcols[i], 0.0) / diag[i]
            W1.narrow(1, i, n - i).sub_(err * hrows[i][i:])         # OBS update of the block's remaining columns
            errs.append(err)
        Err1 = torch.cat(errs, dim=1)
        W1.masked_fill_(prune1, 0)   # q: a kept weight's own update is w - 0 * d = w; the pruned ones become 0
        W[:, i1:i2] = W1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]                          # the lazy update of the later blocks
        keep[:, i1:i2] = ~prune1
    return W, keep


@torch.no_grad()
def obs_reference(W: torch.Tensor, H: torch.Tensor, prune: torch.Tensor) -> torch.Tensor:
    """The same left-to-right OBS pruning with explicit inverses of every trailing block H_F (slow; tests):
    for each column c, pruned entries are zeroed and their error spread over columns c.. by eq. 3."""
    W = W.detach().clone().double()
    H = H.detach().double()
    cols = W.shape[1]
    for c in range(cols):
        Finv = torch.linalg.inv(H[c:, c:])
        err = torch.where(prune[:, c], W[:, c], torch.zeros_like(W[:, c])) / Finv[0, 0]
        W[:, c:] -= err[:, None] * Finv[0][None, :]
        W[prune[:, c], c] = 0
    return W


def damped(H: torch.Tensor, percdamp: float = 0.01) -> torch.Tensor:
    """H + percdamp * mean(diag H) * I (SparseGPT's damping)."""
    return H + percdamp * H.diagonal().mean() * torch.eye(H.shape[0], dtype=H.dtype, device=H.device)


@torch.no_grad()
def sequential_prune(block_modules, run_model, prune_block) -> dict:
    """For each block in order: read the Gram matrices of its modules' inputs (the earlier blocks already
    pruned), then call prune_block(modules, grams) -> {name: keep mask}, which edits the weights in place.
    block_modules[l] is {name: module} of block l; run_model() feeds the calibration data. Returns all masks."""
    masks = {}
    for mods in block_modules:
        masks.update(prune_block(mods, input_grams(mods, run_model)))
    return masks


def reconstruction_error(W: torch.Tensor, W_hat: torch.Tensor, H: torch.Tensor) -> float:
    """trace((W_hat - W) H (W_hat - W)^T) = ||(W_hat - W) X^T||_F^2 for H = X^T X."""
    D = (W_hat.double() - W.double())
    return float(torch.einsum("ij,jk,ik->", D, H.double(), D))
