"""How much running one layer's GEMMs at a lower precision costs, estimated from statistics of one
BF16 training step: SNIP's forward "loss divergence" and backward "weight divergence".

SNIP: An Adaptive Mixed Precision Framework for Subbyte Large Language Model Training
(Pan, Yang, Yang, Mahlke, ASPLOS 2026), https://arxiv.org/abs/2602.01410 . The paper defines
"loss divergence in the forward pass, caused by quantization-induced increases in training loss,
and weight divergence in the backward pass, which measures error propagation through gradients
affecting model updates", computed from statistics of activations, gradients and optimizer states.
The formulas below are this collection's reconstruction of those two quantities (the paper's own
equations are not reproduced here), both in nats so that they add in the ILP's objective.

For a linear layer Y = X W^T (X: [N, d_in], the N tokens of a batch; the loss L is their mean),
with G = dL/dY from a BF16 step and Q_a, Q_w, Q_g the p-bit quantisers of reprolib/layers/mixed_precision.py:

  loss divergence, a second-order Taylor expansion of L in the layer's output, with the empirical
  Fisher of the per-token losses (token n's output moves only its own loss, whose gradient is N G_n):
      dY  = Q_a(X) Q_w(W)^T - X W^T
      D^f = sum_n G_n . dY_n  +  (N / 2) sum_n (G_n . dY_n)^2

  weight divergence, the excess loss that gradient errors leave behind in steady state: an update
  theta <- theta - lr P (g + e) with noise e of covariance S keeps a quadratic loss above its
  minimum by lr tr(P S) / 4 on average (small lr); Adam's preconditioner is P = diag(1 / (sqrt(v_hat) + eps)):
      dG_W = Q_g(G)^T Q_a(X) - G^T X                  (the wgrad error of one batch)
      D^b  = (lr / 4) sum_ij dG_W,ij^2 / (sqrt(v_hat_ij) + eps)

D^b counts the layer's own weight-gradient error; the dgrad error that flows into earlier layers is
not propagated (a simplification). measured_loss_divergence gives the exact loss change of the
forward half, the check on D^f.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor

from ..kernels.fake_quant import quantize_activation, quantize_weight
from ..train import autocast


def default_loss(model, batch):
    return model(*batch)[1]


@contextlib.contextmanager
def all_bits(layers: dict, bits: int = 16):
    """Temporarily run every layer of `layers` at `bits` (restores each layer's own width)."""
    saved = {n: m.bits for n, m in layers.items()}
    try:
        for m in layers.values():
            m.bits = bits
        yield
    finally:
        for n, m in layers.items():
            m.bits = saved[n]


def capture_gemm_operands(model, layers: dict, batch, loss_fn=default_loss) -> tuple[dict, float]:
    """One forward and backward of `batch` with every layer at 16 bits (the BF16 reference), under the
    training autocast: ({name: (X [N, d_in], G = dL/dY [N, d_out])} in float32, the loss). Parameter
    gradients are cleared afterwards and every layer's precision is restored."""
    ops, handles = {}, []

    def hook(name):
        def on_forward(module, inputs, output):
            x = inputs[0].detach()
            output.register_hook(lambda g: ops.__setitem__(name, (x.flatten(0, -2).float(), g.flatten(0, -2).float())))
        return on_forward

    device = next(model.parameters()).device
    was_training = model.training
    model.train()
    try:
        handles = [m.register_forward_hook(hook(n)) for n, m in layers.items()]
        with all_bits(layers, 16):
            with autocast(device, True):
                loss = loss_fn(model, batch)
            loss.backward()
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return {n: ops[n] for n in layers}, float(loss.detach())


def loss_divergence(x: Tensor, w: Tensor, g: Tensor, bits: int, group_size: int = 256, act_topk: int = 2) -> float:
    """D^f (module docstring): the Taylor estimate of the loss change when this layer's forward GEMM
    runs at `bits`; x [N, d_in], w [d_out, d_in], g = dL/dY [N, d_out] of a mean-over-N loss."""
    if bits == 16:
        return 0.0
    w = w.detach().float()
    dy = F.linear(quantize_activation(x, group_size, bits, act_topk), quantize_weight(w, group_size, bits)) \
        - F.linear(x, w)
    per_token = (g * dy).sum(-1)                                  # G_n . dY_n
    return float(per_token.sum() + 0.5 * x.shape[0] * per_token.square().sum())


def weight_divergence(x: Tensor, g: Tensor, v_hat: Tensor, lr: float, bits: int, group_size: int = 256,
                      act_topk: int = 2, eps: float = 1e-8) -> float:
    """D^b (module docstring): the steady-state excess loss of Adam at `lr` from this layer's wgrad
    running at `bits`; v_hat is Adam's bias-corrected second moment of the layer's weight."""
    if bits == 16:
        return 0.0
    err = quantize_activation(g, group_size, bits, act_topk).t() @ quantize_activation(x, group_size, bits, act_topk) \
        - g.t() @ x
    return float(lr / 4 * (err.square() / (v_hat.float().sqrt() + eps)).sum())


def adam_v_hat(optimizer: torch.optim.Optimizer, param: Tensor) -> tuple[Tensor, float]:
    """Adam's bias-corrected second moment of `param` and its group's (current lr, eps)."""
    group = next((g for g in optimizer.param_groups if any(p is param for p in g["params"])), None)
    if group is None:
        raise ValueError("the parameter is not one the optimizer updates")
    state = optimizer.state.get(param, {})
    if "exp_avg_sq" not in state:
        raise ValueError("the optimizer has no second moment for this parameter yet: take a step first")
    step = float(state["step"])
    v_hat = state["exp_avg_sq"] / (1 - group["betas"][1] ** step)
    return v_hat, (group["lr"], group["eps"])


def divergence_table(model, layers: dict, batch, optimizer, bits=(16, 8, 4), loss_fn=default_loss) -> dict:
    """SNIP's statistics for every layer and precision from one BF16 step on `batch`:
    {"forward": [L, P], "backward": [L, P], "loss": float} (rows in `layers` order, columns `bits`)."""
    ops, loss = capture_gemm_operands(model, layers, batch, loss_fn)
    fwd, bwd = torch.zeros(len(layers), len(bits)), torch.zeros(len(layers), len(bits))
    with torch.no_grad():
        for i, (name, layer) in enumerate(layers.items()):
            x, g = ops[name]
            v_hat, (lr, eps) = adam_v_hat(optimizer, layer.weight)
            for j, b in enumerate(bits):
                fwd[i, j] = loss_divergence(x, layer.weight, g, b, layer.group_size, layer.act_topk)
                bwd[i, j] = weight_divergence(x, g, v_hat, lr, b, layer.group_size, layer.act_topk, eps)
    return dict(forward=fwd.numpy(), backward=bwd.numpy(), loss=loss)


@torch.no_grad()
def measured_loss_divergence(model, layers: dict, batch, bits: int, loss_fn=default_loss) -> dict:
    """The exact loss change on `batch` when one layer at a time runs at `bits`, all others at 16,
    under the training autocast: {name: L(layer at bits) - L(all BF16)}."""
    device = next(model.parameters()).device
    out = {}
    with all_bits(layers, 16), autocast(device, True):
        ref = float(loss_fn(model, batch))
        for name, layer in layers.items():
            layer.bits = bits
            out[name] = float(loss_fn(model, batch)) - ref
            layer.bits = 16
    return out
