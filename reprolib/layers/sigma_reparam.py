"""sigmaReparam: every linear layer's weight divided by its spectral norm, times one learned scalar.

Zhai et al., "Stabilizing Transformer Training by Preventing Attention Entropy Collapse", ICML 2023,
arXiv 2303.06296; official code https://github.com/apple/ml-sigma-reparam (vision/layers.py:
SpectralNormedWeight, SNLinear, convert_to_sn), which this follows.

    W_hat = (gamma / sigma(W)) W                       (the paper's reparameterisation)

sigma(W) = ||W||_2 is tracked by one power-iteration step per training forward, from the stored
right singular vector u (no gradient through the iteration, gradient through W in sigma):

    v <- normalize(W u),   u <- normalize(W^T v),   sigma = v^T W u

At construction u is the exact top right singular vector (SVD), so the first sigma is exact. In eval
mode the step is taken but u is not stored (as the official code). gamma is one learnable scalar per
layer; the official PyTorch code (used for the paper's vision, language-modelling and translation
runs) starts it at the SVD spectral norm, so that W_hat = W at initialisation: gamma_init="sigma".
A number gives gamma that value instead (the official JAX speech code, speech/layers.py, starts it
at 1).

blocks = k treats the weight as k stacked row blocks, each with its own u, sigma and gamma: exactly
k separate sigmaReparam layers whose outputs are concatenated (a fused q, k, v projection with
blocks=3 is sigmaReparam on separate W_Q, W_K, W_V).

sigma and W_hat are computed in float32 with autocast off, as the official FP32SpectralNormedWeight
wrapper does under mixed precision.
"""
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .swap import is_linear, swap_modules


class SigmaReparamLinear(nn.Linear):
    """nn.Linear with weight W_hat = gamma W / sigma(W) (module docstring). Buffers, one row per
    block: u (the right singular vector), sigma_est (the last training step's sigma, for monitoring)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, gamma_init="sigma",
                 blocks: int = 1, device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        if out_features % blocks:
            raise ValueError(f"out_features={out_features} does not split into blocks={blocks}")
        self.gamma_init, self.blocks = gamma_init, blocks
        self.gamma = nn.Parameter(torch.ones(blocks, device=device))
        self.register_buffer("u", torch.zeros(blocks, in_features, device=device))
        self.register_buffer("sigma_est", torch.ones(blocks, device=device))
        self.reset_sigma()

    def _blocks(self, W: Tensor) -> Tensor:
        return rearrange(W, "(k o) i -> k o i", k=self.blocks)

    @torch.no_grad()
    def reset_sigma(self) -> None:
        """The first sigma by SVD (official SpectralNormedWeight.__init__); gamma per gamma_init."""
        _, s, vh = torch.linalg.svd(self._blocks(self.weight.float()), full_matrices=False)
        self.u.copy_(vh[:, 0])
        self.sigma_est.copy_(s[:, 0])
        self.gamma.copy_(s[:, 0] if self.gamma_init == "sigma" else torch.full_like(s[:, 0], float(self.gamma_init)))

    def sigma(self) -> Tensor:
        """One power-iteration step from u; returns sigma = v^T W u (one per block), with the
        gradient through W only."""
        with torch.autocast(self.weight.device.type, enabled=False):
            W = self._blocks(self.weight.float())
            with torch.no_grad():
                v = F.normalize(torch.einsum("koi,ki->ko", W, self.u), dim=-1)   # v <- normalize(W u)
                u = F.normalize(torch.einsum("koi,ko->ki", W, v), dim=-1)        # u <- normalize(W^T v)
                if self.training:
                    self.u.copy_(u)
            sigma = torch.einsum("ko,koi,ki->k", v, W, u)                        # sigma = v^T W u
            if self.training:
                self.sigma_est.copy_(sigma.detach())
        return sigma

    @torch.no_grad()
    def exact_sigma(self) -> Tensor:
        """sigma(W) of each block by SVD (no state change): what the tracked sigma_est estimates."""
        return torch.linalg.matrix_norm(self._blocks(self.weight.float()), ord=2)

    def effective_weight(self) -> Tensor:
        scale = self.gamma / self.sigma()                                        # gamma / sigma(W)
        return rearrange(scale[:, None, None] * self._blocks(self.weight.float()), "k o i -> (k o) i")

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.effective_weight().to(x.dtype), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, gamma_init={self.gamma_init}, blocks={self.blocks}"


def sigma_reparam_linears(model: nn.Module, gamma_init="sigma", skip=(), blocks=None) -> list[str]:
    """Swap every nn.Linear of `model` whose name does not end with one of `skip` for a
    SigmaReparamLinear holding the same weight and bias Parameters, in place (the official
    convert_to_sn converts every nn.Linear). blocks: {name suffix: k} for fused layers, e.g.
    {"qkv": 3}. gamma and u come from the layer's current weight, so call this after
    initialisation. Returns the swapped layers' names."""
    def make(full, child):
        k = next((k for suffix, k in (blocks or {}).items() if full.endswith(suffix)), 1)
        layer = SigmaReparamLinear(child.in_features, child.out_features, child.bias is not None, gamma_init, k,
                                   device=child.weight.device)
        layer.weight, layer.bias = child.weight, child.bias
        layer.reset_sigma()
        return layer
    return list(swap_modules(model, lambda full, m: is_linear(m) and not full.endswith(tuple(skip)), make))
