"""Model surgery shared by the layer swaps: replace chosen submodules of a built model in place.

Every `*_linears` / `*_norms` function of this package is `swap_modules` with its own choice of
modules and its own replacement, so a notebook builds a variant (sigmaReparam, FP4, mixed precision,
SeeDNorm) from the collection's models without a second copy of them.
"""
from typing import Callable

from torch import nn


def swap_modules(model: nn.Module, select: Callable[[str, nn.Module], bool],
                 make: Callable[[str, nn.Module], nn.Module]) -> dict[str, nn.Module]:
    """Replace every submodule `m` named `full` for which select(full, m) holds by make(full, m), in
    place; return {full: replacement} in model order. The replacement takes the old one's key in its
    parent's _modules, so the order of modules and of parameters is kept (optimizers and state dicts
    built later see the same order)."""
    swapped = {}
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            full = f"{parent_name}.{name}" if parent_name else name
            if select(full, child):
                swapped[full] = make(full, child)
                setattr(parent, name, swapped[full])
    return swapped


def is_linear(module: nn.Module) -> bool:
    """Exactly nn.Linear (not a subclass: a layer already swapped is not swapped again)."""
    return type(module) is nn.Linear
