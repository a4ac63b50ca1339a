"""Replay objectives for class-incremental learning: experience replay (ER) and ER with IDER's
idempotence losses.

ER (Chaudhry et al. 2019, arXiv 1902.10486; mammoth models/er.py): cross-entropy on the stream batch
concatenated with a batch drawn from the replay buffer.

IDER (Liu et al., "IDER: IDempotent Experience Replay for Reliable Continual Learning", ICLR 2026,
arXiv 2603.00624; official models/ider.py, `observe`). For a batch (x, y) and a model f(x, y_in) =
f2(f1(x), y_in) (models/idempotent.py) with the empty label y_0 = 1/C:

    two passes:        l1 = f(x, y_0),  l2 = f(x, softmax(l1))                         (pass 2 reads pass 1)
    L_stream  = 0.5 (CE(l1, y) + CE(l2, y))                                                 stream batch
    L_buffer  = w_c (CE(l1_b, y_b) + CE(l2_b, y_b))                                         a buffer batch
    L_id(x)   = MSE( f_cur(x, y_0), f_old(x, softmax f_cur(x, y_0)) )                       idempotence distillation
    L = L_stream + w_b L_id(stream) + L_buffer + w_a L_id(another buffer batch)

f_old is the model frozen at the end of the previous task (its weights get no gradient; the gradient
of L_id flows through f_cur's pass and through the softmax fed to f_old). The distillation terms start
with the second task. Official defaults for seq-CIFAR-10 (utils/best_args.py): w_a = 0.05, w_b = 0.05,
w_c = 0.5; the buffer batches have the stream's batch size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def er_loss(model, x, y, buf=None):
    """ER: CE over the stream batch and (if given) a buffer batch, as one concatenated batch."""
    if buf is not None:
        x, y = torch.cat([x, buf[0]]), torch.cat([y, buf[1]])
    return F.cross_entropy(model(x), y)


def two_pass_ce(model, x, y):
    """CE(l1, y) + CE(l2, y) with l1 = f(x, y_0), l2 = f(x, softmax(l1)): the two supervised passes."""
    z = model.f1(x.flatten(1))
    l1 = model.f2(z, model.empty_label(len(z), z))
    l2 = model.f2(z, l1.softmax(-1))                       # pass 2 reads pass 1's prediction
    return F.cross_entropy(l1, y) + F.cross_entropy(l2, y)


def idempotence_distillation(model, old_model, x):
    """MSE(f_cur(x, y_0), f_old(x, softmax f_cur(x, y_0))), f_old frozen (no parameter gradient)."""
    l1 = model(x)
    with torch.no_grad():
        z_old = old_model.f1(x.flatten(1))                 # f_old's first part never sees f_cur's output
    for p in old_model.parameters():
        p.requires_grad_(False)
    l2 = old_model.f2(z_old, l1.softmax(-1))
    return F.mse_loss(l1, l2)


def ider_loss(model, old_model, x, y, buf=None, buf_id=None, w_a: float = 0.05, w_b: float = 0.05,
              w_c: float = 0.5):
    """IDER's training loss for one step (module docstring). old_model=None: the first task (no
    distillation); buf / buf_id: the two buffer batches (x_b, y_b) of the replay and distillation terms."""
    loss = 0.5 * two_pass_ce(model, x, y)
    if old_model is not None and w_b:
        loss = loss + w_b * idempotence_distillation(model, old_model, x)
    if buf is not None and w_c:
        loss = loss + w_c * two_pass_ce(model, *buf)
    if buf_id is not None and old_model is not None and w_a:
        loss = loss + w_a * idempotence_distillation(model, old_model, buf_id[0])
    return loss
