"""What every optimizer shell of reprolib.optim shares."""
import torch


def closure_loss(closure):
    """torch.optim's convention: step(closure) re-evaluates the loss, with gradients enabled
    even though the step itself runs under no_grad."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()
