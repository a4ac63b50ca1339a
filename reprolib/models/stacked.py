"""Many small networks of one architecture trained side by side as one module, and a wrapper that
returns a classifier's penultimate features with its logits.

    nets = [WithFeatures(SmallCNN(...), classifier_bias=False) for _ in range(R)]
    stack = Stacked(nets)               # parameters [R, ...], one vmapped forward for all R
    logits, feats = stack(x)            # x [R, B, ...]: one batch per network
    logits, feats = stack(x, shared=True)   # x [B, ...]: the same batch for every network

Stacked keeps each network's parameters stacked on a leading dimension (torch.func.stack_module_state)
and runs the first network's module code on each slice with torch.func.vmap(functional_call), so a
loss summed over the R networks gives each its own gradient. stack.unstack(r) returns network r as a
plain module (for checks against the unstacked model).
"""
import copy

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

__all__ = ["Stacked", "WithFeatures"]


class WithFeatures(nn.Module):
    """forward(x) -> (logits, features): `model`'s last nn.Linear becomes `classifier` and the
    features are what it reads. That Linear must be the last operation of model.forward (true of
    reprolib's MLP and SmallCNN). classifier_bias=True/False swaps in a freshly initialised
    Linear with / without a bias; None keeps the model's own."""

    def __init__(self, model: nn.Module, classifier_bias: bool | None = None):
        super().__init__()
        linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError("the model has no nn.Linear classifier")
        name, last = linears[-1]
        if classifier_bias is not None and (last.bias is not None) != classifier_bias:
            last = nn.Linear(last.in_features, last.out_features, bias=classifier_bias,
                             device=last.weight.device, dtype=last.weight.dtype)
        parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
        setattr(parent, name.rpartition(".")[2], nn.Identity())
        self.body, self.classifier = model, last

    def forward(self, x: torch.Tensor):
        h = self.body(x)
        return self.classifier(h), h


class Stacked(nn.Module):
    """R networks of one architecture as stacked parameters, a vmapped forward (module docstring).
    Parameters are registered under their module names with '.' replaced by '__'."""

    def __init__(self, nets: list[nn.Module]):
        super().__init__()
        params, buffers = stack_module_state(nets)
        self.names = list(params)
        self.stacked = nn.ParameterDict({k.replace(".", "__"): nn.Parameter(v.detach().clone())
                                         for k, v in params.items()})
        self.buffer_names = list(buffers)
        for k, v in buffers.items():
            self.register_buffer("buf__" + k.replace(".", "__"), v.clone())
        self._template = [copy.deepcopy(nets[0]).to("meta")]   # a list: not registered as a submodule
        self.size = len(nets)

    def param(self, name: str) -> torch.Tensor:
        """The stacked parameter [R, ...] of the networks' parameter `name` (e.g. 'classifier.weight')."""
        return self.stacked[name.replace(".", "__")]

    def _state(self):
        return ({k: self.param(k) for k in self.names},
                {k: getattr(self, "buf__" + k.replace(".", "__")) for k in self.buffer_names})

    def forward(self, x: torch.Tensor, shared: bool = False):
        """x [R, B, ...], one batch per network; shared=True: x [B, ...] goes to every network."""
        params, buffers = self._state()
        call = lambda p, b, inp: functional_call(self._template[0], (p, b), (inp,))
        return vmap(call, in_dims=(0, 0, None if shared else 0), randomness="different")(params, buffers, x)

    def unstack(self, r: int) -> nn.Module:
        """Network r as a plain module on the stack's device."""
        params, buffers = self._state()
        net = copy.deepcopy(self._template[0]).to_empty(device=next(iter(params.values())).device)
        net.load_state_dict({**{k: v[r].detach() for k, v in params.items()},
                             **{k: v[r] for k, v in buffers.items()}})
        return net
