"""TrAct: train the first layer's pre-activations, not its weights.

Petersen, Borgelt & Ermon, "TrAct: Making First-layer Pre-Activations Trainable", NeurIPS 2024,
arXiv 2410.23970 ; official code https://github.com/Felix-Petersen/tract (src/tract.py), whose
approach (a custom autograd Function in drop-in Linear/Conv2d modules) this follows.

For a first layer z = X W^T (+ b) with inputs X (b x n; for a convolution the unfolded patches,
b = batch * output positions) and dL/dz = G_z, plain backprop gives grad_W = G_z^T X, which
scales with the pixel values. TrAct takes a gradient step on z and solves (ridge regression)
for the weights nearest to it, which replaces the weight gradient by

    grad_W' = G_z^T X (X^T X / b + lam I)^{-1}                       (n x n solve, b >= n)
            = (grad_W - (grad_W X^T)(X X^T + b lam I)^{-1} X) / lam   (Woodbury, b x b, b < n)

lam = 0.1 by default (paper and code). lam grad_W' -> grad_W as lam -> infinity. The forward
output, the input gradient and the bias gradient are those of nn.Linear / nn.Conv2d; the
optimizer is unchanged. Departures from the official code: linear solves instead of an explicit
inverse (float32 at least), dilation supported, groups / non-zero padding modes rejected.
"""
import torch
import torch.nn.functional as F
from torch import Tensor, nn


def tract_grad(grad_W: Tensor, X: Tensor, lam: float = 0.1) -> Tensor:
    """grad_W (X^T X / b + lam I)^{-1}; grad_W (out, ...) flattens to (out, n), X is (b, n)."""
    shape, dtype = grad_W.shape, grad_W.dtype
    ctype = torch.promote_types(dtype, torch.float32)  # solves need float32 or float64
    G, X = grad_W.reshape(shape[0], -1).to(ctype), X.to(ctype)
    b, n = X.shape
    if b >= n:
        M = X.T @ X / b + lam * torch.eye(n, device=X.device, dtype=ctype)
        out = torch.linalg.solve_ex(M, G.T)[0].T  # M symmetric: G M^{-1} = (M^{-1} G^T)^T; _ex: no host sync
    else:  # fewer rows than features: the b x b system is the cheaper one
        K = X @ X.T + (b * lam) * torch.eye(b, device=X.device, dtype=ctype)
        out = (G - torch.linalg.solve_ex(K, X @ G.T)[0].T @ X) / lam
    return out.reshape(shape).to(dtype)


class _TrActLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, lam):
        ctx.save_for_backward(x, weight)
        ctx.lam, ctx.has_bias = lam, bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_z):
        x, weight = ctx.saved_tensors
        grad_z = grad_z.to(weight.dtype)  # under autocast z (hence grad_z) may be bf16
        grad_x = (grad_z @ weight).to(x.dtype) if ctx.needs_input_grad[0] else None
        G = grad_z.reshape(-1, weight.shape[0])
        X = x.reshape(-1, weight.shape[1]).to(weight.dtype)  # every leading dim is a row of X
        grad_W = tract_grad(G.T @ X, X, ctx.lam) if ctx.needs_input_grad[1] else None
        grad_b = G.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_W, grad_b, None


class _TrActConv2dFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, lam):
        ctx.save_for_backward(x, weight)
        ctx.conv = (stride, padding, dilation)
        ctx.lam, ctx.has_bias = lam, bias is not None
        return F.conv2d(x, weight, bias, stride, padding, dilation)

    @staticmethod
    def backward(ctx, grad_z):
        x, weight = ctx.saved_tensors
        stride, padding, dilation = ctx.conv
        grad_z, xw = grad_z.to(weight.dtype), x.to(weight.dtype)
        grad_x = grad_W = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.nn.grad.conv2d_input(x.shape, weight, grad_z, stride, padding, dilation).to(x.dtype)
        if ctx.needs_input_grad[1]:
            plain = torch.nn.grad.conv2d_weight(xw, weight.shape, grad_z, stride, padding, dilation)
            patches = F.unfold(xw, weight.shape[2:], dilation, padding, stride)  # (B, n, L), n = C kh kw
            X = patches.transpose(1, 2).reshape(-1, patches.shape[1])  # rows: (image, position)
            grad_W = tract_grad(plain, X, ctx.lam)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_z.sum((0, 2, 3))
        return grad_x, grad_W, grad_b, None, None, None, None


class TrActLinear(nn.Linear):
    """nn.Linear whose weight gradient is TrAct's (input and bias gradients unchanged)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, lam: float = 0.1, **kwargs):
        super().__init__(in_features, out_features, bias, **kwargs)
        self.lam = lam

    def forward(self, x: Tensor) -> Tensor:
        return _TrActLinearFn.apply(x, self.weight, self.bias, self.lam)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, lam={self.lam}"


class TrActConv2d(nn.Conv2d):
    """nn.Conv2d whose weight gradient is TrAct's (on unfolded patches); groups=1, zero padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", lam: float = 0.1, **kwargs):
        if groups != 1 or padding_mode != "zeros" or isinstance(padding, str):
            raise ValueError("TrActConv2d supports groups=1, padding_mode='zeros' and numeric padding")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode, **kwargs)
        self.lam = lam

    def forward(self, x: Tensor) -> Tensor:
        return _TrActConv2dFn.apply(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.lam)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, lam={self.lam}"


def tract(layer: nn.Module, lam: float = 0.1) -> nn.Module:
    """The TrAct version of a first layer (nn.Linear or nn.Conv2d), sharing its parameters:
    `model.conv1 = tract(model.conv1)`, as the official `TrAct(layer, l)`."""
    if isinstance(layer, nn.Conv2d):
        new = TrActConv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                          layer.dilation, layer.groups, layer.bias is not None, layer.padding_mode, lam,
                          device="meta")
    elif isinstance(layer, nn.Linear):
        new = TrActLinear(layer.in_features, layer.out_features, layer.bias is not None, lam, device="meta")
    else:
        raise TypeError(f"TrAct applies to nn.Linear or nn.Conv2d, got {type(layer).__name__}")
    new.weight, new.bias = layer.weight, layer.bias
    return new.train(layer.training)
