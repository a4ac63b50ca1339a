"""A classifier's penultimate features beside its logits, for last-layer geometry (neural collapse).

    net = WithFeatures(SmallCNN(...), classifier_bias=False)
    logits, feats = net(x)
"""
import torch
from torch import nn

__all__ = ["WithFeatures"]


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
