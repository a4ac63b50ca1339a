"""Optimizer-state memory: the bytes an optimizer keeps beside the parameters.

    state_bytes(opt) = sum over every tensor in opt.state of numel * element size

AdamW keeps two tensors per parameter (2x the parameter bytes in fp32), Muon one momentum buffer
per matrix, Lion one, SinkGD none for its matrices. Scalars (step counters) count only when they
are tensors. The optimizer comparison notebooks report this beside loss and speed.
"""
import torch


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    total = 0
    for state in optimizer.state.values():
        for value in state.values():
            if torch.is_tensor(value):
                total += value.numel() * value.element_size()
    return total


def parameter_bytes(params) -> int:
    return sum(p.numel() * p.element_size() for p in params)
