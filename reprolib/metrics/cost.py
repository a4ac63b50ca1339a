"""Hardware-independent cost: the floating-point operations a call performs, and the forward and
backward passes it makes through given modules.

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


def count_passes(modules: dict, fn, *args, **kwargs) -> dict:
    """Forward and backward passes through each module of `modules` ({name: nn.Module}) while
    fn(*args, **kwargs) runs: {name: {"forward": n, "backward": m}}. A forward counts each call of the
    module; a backward counts each time a gradient flows back into the module's output (a forward
    under no_grad has none)."""
    counts = {name: {"forward": 0, "backward": 0} for name in modules}

    def hook(name):
        def on_forward(module, inputs, output):
            counts[name]["forward"] += 1
            out = output[0] if isinstance(output, (tuple, list)) else output
            if getattr(out, "requires_grad", False):
                out.register_hook(lambda grad: counts[name].__setitem__("backward", counts[name]["backward"] + 1))
        return on_forward

    handles = [m.register_forward_hook(hook(name)) for name, m in modules.items()]
    try:
        fn(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return counts
