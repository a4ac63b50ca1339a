"""Hardware-independent cost: the floating-point operations a call performs.

Timing claims are recorded beside a count that does not depend on the machine; this counts FLOPs
with PyTorch's own counter (torch.utils.flop_counter: matrix products and convolutions, 2 per
multiply-add, forward and backward as they run). Element-wise work is not counted.
"""
from torch.utils.flop_counter import FlopCounterMode


def count_flops(fn, *args, **kwargs) -> int:
    """FLOPs of fn(*args, **kwargs) as torch.utils.flop_counter counts them."""
    with FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return int(counter.get_total_flops())
