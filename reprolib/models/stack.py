"""A stack of R models of one architecture trained side by side as one model.

The R members' parameters are stacked along a new first dimension (torch.func.stack_module_state)
and the forward pass is one vmapped call of the architecture (torch.func.functional_call), so R
seeds or settings cost one set of batched kernels instead of R. Summing the members' losses gives
each member its own gradient, and elementwise optimizers (SGD, Adam) then update each member as if
it trained alone; `optim.member_step` gives each member its own learning rate (0 freezes it).

    stack = ModelStack([MLP(784, [100, 100], 10) for _ in range(R)])
    logits = stack(x)                      # x [R, B, ...] (one batch per member) -> [R, B, 10]
    logits = stack(x, shared=True)         # x [B, ...]: the same batch for every member
    stack.param("net.0.weight")            # a stacked parameter [R, ...] by the members' name (param groups)
    models = stack.unstack()               # R ordinary modules holding the members' current weights
    stack.unstack(r)                       # member r alone
    stack.load(models)                     # write (edited) members back

Random operations inside the call (dropout) draw differently for each member, as R separate runs
would.

Buffers are stacked too but are read-only inside the vmapped call: BatchNorm in training mode,
which updates its running statistics in place, is not supported.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap


class ModelStack(nn.Module):
    def __init__(self, models: list[nn.Module]):
        super().__init__()
        if not models:
            raise ValueError("a stack needs at least one model")
        names = [n for n, _ in models[0].named_parameters()]
        if any([n for n, _ in m.named_parameters()] != names for m in models):
            raise ValueError("every member of a stack must have the same architecture")
        params, buffers = stack_module_state(models)
        self.names, self.buffer_names = list(params), list(buffers)
        self.stacked = nn.ParameterList([nn.Parameter(params[n]) for n in self.names])
        for i, n in enumerate(self.buffer_names):
            self.register_buffer(f"buffer_{i}", buffers[n])
        self._base = [copy.deepcopy(models[0]).to("meta")]   # in a list: its (meta) weights are not the stack's
        self.size = len(models)

    def _buffers_dict(self) -> dict:
        return {n: getattr(self, f"buffer_{i}") for i, n in enumerate(self.buffer_names)}

    def forward(self, x: torch.Tensor, shared: bool = False) -> torch.Tensor:
        """x [R, B, ...] -> [R, B, ...]; shared=True: one batch x [B, ...] for every member."""
        base = self._base[0]

        def one(params, buffers, xi):
            return functional_call(base, (params, buffers), (xi,))

        params = dict(zip(self.names, self.stacked))
        return vmap(one, in_dims=(0, 0, None if shared else 0), randomness="different")(
            params, self._buffers_dict(), x)

    def param(self, name: str) -> nn.Parameter:
        """The stacked parameter [R, ...] that the members call `name` (e.g. 'classifier.weight')."""
        return self.stacked[self.names.index(name)]

    @torch.no_grad()
    def unstack(self, r: int | None = None):
        """The members as R ordinary modules (copies of the architecture holding member r's weights);
        with r, member r alone."""
        if r is not None:
            return self.unstack()[r]
        device = self.stacked[0].device
        out = []
        for r in range(self.size):
            m = copy.deepcopy(self._base[0]).to_empty(device=device)
            stacked = dict(zip(self.names, self.stacked)) | self._buffers_dict()
            for n, t in [*m.named_parameters(), *m.named_buffers()]:
                t.copy_(stacked[n][r])
            out.append(m)
        return out

    @torch.no_grad()
    def load(self, models: list[nn.Module]) -> None:
        """Copy R modules' weights into the stack (the inverse of `unstack`)."""
        if len(models) != self.size:
            raise ValueError(f"the stack holds {self.size} members, got {len(models)} models")
        params, buffers = stack_module_state(models)
        for n, p in zip(self.names, self.stacked):
            p.copy_(params[n])
        for n, b in self._buffers_dict().items():
            b.copy_(buffers[n])
