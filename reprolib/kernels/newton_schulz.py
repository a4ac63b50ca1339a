"""Newton-Schulz orthogonalisation: G = U S V^T  ->  approximately U V^T.

Keller Jordan, "Muon: An optimizer for hidden layers in neural networks" (2024),
https://kellerjordan.github.io/posts/muon/ ; code https://github.com/KellerJordan/Muon

With X_0 = G / ||G||_F (so every singular value is <= 1), each step applies the odd quintic

    A = X X^T,    X <- a X + (b A + c A^2) X,    (a, b, c) = (3.4445, -4.7750, 2.0315)

to the singular values, s -> a s + b s^3 + c s^5. The coefficients maximise the slope at zero, so
five steps push every singular value into roughly [0.7, 1.2] rather than exactly 1; Muon does
not need more. X is transposed to be wide (rows <= cols) so the Gram matrix A is the small one.

The arithmetic is in bfloat16 on CUDA, as in Keller Jordan's code and torch.optim.Muon; the
operation order (addmm with beta=b, alpha=c; then beta=a) is torch.optim.Muon's, so a 2-D input
with dtype=torch.bfloat16 gives bit-identical results. On the CPU the default is float32: most
CPUs have no fast bf16 matrix product (here bf16 ran 10x slower than fp32), and fp32 is closer to
the exact iteration. Inputs of shape (..., m, n) are orthogonalised matrix by matrix in
one batched call (baddbmm).
"""
import torch
from torch import Tensor

NS5_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def default_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def newton_schulz(G: Tensor, steps: int = 5, coefficients=NS5_COEFFICIENTS, eps: float = 1e-7,
                  dtype: torch.dtype | None = None) -> Tensor:
    """Approximate the orthogonal polar factor U V^T of G (shape (m, n) or (..., m, n)).
    dtype: the arithmetic's precision; None = bf16 on CUDA, fp32 on the CPU."""
    dtype = dtype or default_dtype(G.device)
    if G.ndim < 2:
        raise ValueError(f"newton_schulz needs a matrix or a batch of matrices, got shape {tuple(G.shape)}")
    a, b, c = coefficients
    batch_shape = G.shape[:-2]
    X = G.to(dtype)
    if X.ndim > 3:  # baddbmm takes one batch dimension
        X = X.reshape(-1, *G.shape[-2:])
    tall = G.size(-2) > G.size(-1)
    if tall:
        X = X.mT
    X = X / X.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)
    mm = torch.addmm if X.ndim == 2 else torch.baddbmm
    for _ in range(steps):
        A = X @ X.mT
        B = mm(A, A, A, beta=b, alpha=c)
        X = mm(X, B, X, beta=a)
    if tall:
        X = X.mT
    return X.reshape(*batch_shape, *G.shape[-2:])


def newton_schulz_many(Gs: list[Tensor], max_padding_flops: float = 2e10, **kwargs) -> list[Tensor]:
    """Orthogonalise matrices of *different* shapes with as few batched calls as pays.

    Each matrix (or stack (..., m, n)) is turned wide (rows <= cols); same-shape matrices are
    stacked, and stacks with the same row count are zero-padded to a common width and share one
    call. Padding with zero columns is exact: they add nothing to A = X X^T or to ||X||_F, and
    X <- a X + (b A + c A^2) X keeps them zero. Padding costs arithmetic, so a stack joins a wider
    call only if its padded columns add at most `max_padding_flops` (2e10: ~30 us on an H100,
    about what one call's launches cost): small GPTs (width 384) get one call for all their
    matrices, wide ones (768) one per shape. In floating point the padded sums may round
    differently (bf16 tolerance, not bit-identity). Returns one contiguous tensor per input, in
    input order. kwargs go to `newton_schulz`.
    """
    steps = kwargs.get("steps", 5)
    wide = []
    for G in Gs:
        if G.ndim < 2:
            raise ValueError(f"newton_schulz_many needs matrices, got shape {tuple(G.shape)}")
        W = G.mT if G.size(-2) > G.size(-1) else G
        wide.append(W.reshape(-1, *W.shape[-2:]))
    by_shape: dict[tuple, list[int]] = {}
    for i, W in enumerate(wide):
        by_shape.setdefault(tuple(W.shape[-2:]), []).append(i)
    calls: list[list[tuple]] = []  # each call: [(shape, indices, stacked block)], widest first
    for shape, idx in sorted(by_shape.items(), key=lambda kv: -kv[0][1]):
        block = torch.cat([wide[i] for i in idx])
        m, n = shape
        for call in calls:
            (m0, n0), _, _ = call[0]
            if m0 == m and steps * 4 * m * m * (n0 - n) * block.size(0) <= max_padding_flops:
                call.append((shape, idx, block))
                break
        else:
            calls.append([(shape, idx, block)])
    out: list[Tensor | None] = [None] * len(Gs)
    for call in calls:
        (m, n), _, first = call[0]
        if len(call) == 1:
            X = first
        else:  # one copy per distinct shape, not per matrix
            X = first.new_zeros(sum(b.size(0) for _, _, b in call), m, n)
            k = 0
            for _, _, b in call:
                X[k:k + b.size(0), :, :b.size(-1)] = b
                k += b.size(0)
        O = newton_schulz(X, **kwargs)
        k = 0
        for (_, width), idx, b in call:
            Ob = O[k:k + b.size(0), :, :width]
            k += b.size(0)
            j = 0
            for i in idx:
                G, size = Gs[i], wide[i].size(0)
                Oi = Ob[j:j + size]
                j += size
                Oi = Oi.mT if G.size(-2) > G.size(-1) else Oi
                out[i] = Oi.reshape(G.shape).contiguous()
    return out
