"""A whole training step (forward, backward, optimizer) captured in one CUDA graph.

The collection's small models are bound by kernel launches and host overhead, not arithmetic: a
step of a 6-layer GPT launches hundreds of short kernels. Replaying the captured step costs one
launch (PyTorch's "CUDA Graphs" notes, whole-network capture). `reprolib.kernels.graphs` has the
rules a graph imposes; here they are met for a training step: static batch buffers, the
learning rate in device tensors (so a schedule needs no recapture), gradients allocated by the
captured backward, and no host synchronisation inside.
"""
from __future__ import annotations

from typing import Callable

import torch


class GraphedStep:
    """One whole training step (forward, backward, optimizer) captured in a CUDA graph and replayed.

    step(batch) copies the batch into static buffers, replays the graph and returns the loss as a
    device tensor (read it when you need it: reading it synchronises). set_lr(lrs) writes the learning
    rates into the optimizer's lr tensors outside the graph, so a schedule costs no recapture.

    Requirements, as for any whole-step capture (PyTorch "CUDA Graphs", whole-network capture):
    batches of one fixed shape; an optimizer whose step can be captured, e.g.
    torch.optim.AdamW(params, lr=torch.tensor(lr, device=...), capturable=True) (fused or not), with
    every group's lr a device tensor; a model with no host synchronisation in forward or backward
    (no .item(), no data-dependent shapes). The first `warmup` steps run eagerly on a side stream;
    they are real steps of the run. On the CPU every step is the eager step, the same code path.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 loss_fn: Callable[[torch.nn.Module, tuple], torch.Tensor], amp: bool = True,
                 grad_clip: float | None = None, warmup: int = 3, enabled: bool = True):
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.device = next(model.parameters()).device
        self.amp, self.grad_clip, self.warmup = amp, grad_clip, warmup
        self.enabled = enabled and self.device.type == "cuda"
        if self.enabled:
            for g in optimizer.param_groups:
                if not (torch.is_tensor(g["lr"]) and g["lr"].device == self.device):
                    raise ValueError("a captured optimizer step needs every group's lr as a tensor on "
                                     f"{self.device} (e.g. AdamW(..., lr=torch.tensor(1e-3, device=...), capturable=True))")
                if g.get("capturable") is False:
                    raise ValueError("the optimizer must be built with capturable=True")
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: tuple | None = None
        self.loss: torch.Tensor | None = None
        self.calls = 0

    def set_lr(self, lrs) -> None:
        for g, lr in zip(self.optimizer.param_groups, lrs):
            if torch.is_tensor(g["lr"]):
                g["lr"].fill_(lr)
            else:
                g["lr"] = lr

    def _body(self, batch: tuple) -> torch.Tensor:
        # autocast's weight-cast cache would hold casts made at capture: off, as the CUDA Graphs notes ask
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16,
                            enabled=self.amp and self.device.type == "cuda", cache_enabled=False):
            loss = self.loss_fn(self.model, batch)
        loss.backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip, foreach=True)
        self.optimizer.step()
        return loss.detach()

    def step(self, batch: tuple) -> torch.Tensor:
        self.calls += 1
        if not self.enabled:
            loss = self._body(batch)
            self.optimizer.zero_grad(set_to_none=True)
            return loss
        if self.graph is None and self.calls <= self.warmup:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                loss = self._body(batch)
                self.optimizer.zero_grad(set_to_none=True)
            torch.cuda.current_stream().wait_stream(side)
            return loss
        if self.graph is None:
            self.static = tuple(t.clone() for t in batch)
            self.optimizer.zero_grad(set_to_none=True)   # the graph's backward allocates the grads
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.loss = self._body(self.static)     # recorded, not run
        else:
            if len(batch) != len(self.static) or any(t.shape != s.shape for t, s in zip(batch, self.static)):
                raise ValueError("a captured step replays one batch shape: "
                                 f"{[tuple(s.shape) for s in self.static]}, got {[tuple(t.shape) for t in batch]}")
            for s, t in zip(self.static, batch):
                s.copy_(t, non_blocking=True)
        self.graph.replay()
        return self.loss
