"""A tiny vision transformer for small images: patches (or image rows) as tokens, a class token,
learned positions, pre-norm encoder blocks, a linear head on the class token.

Dosovitskiy et al., "An Image is Worth 16x16 Words", arXiv 2010.11929. Attention is written out
(softmax(q k^T / sqrt(d)) v) rather than calling a fused kernel, so that forward-mode derivatives
(torch.func.jvp) and vmap go through it on every device. With patch=(1, W) each image row is a
token: the tiny transformer of the Ghosts-of-Softmax experiments on 8x8 digits.
"""
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class _Block(nn.Module):
    def __init__(self, d: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, mlp_ratio * d), nn.GELU(), nn.Linear(mlp_ratio * d, d))

    def forward(self, x):
        q, k, v = rearrange(self.qkv(self.norm1(x)), "b t (three h d) -> three b h t d", three=3, h=self.heads)
        att = torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5, dim=-1)
        x = x + self.proj(rearrange(att @ v, "b h t d -> b t (h d)"))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """x [B, C, H, W] -> logits [B, n_classes]; tokens are the (ph, pw) patches, row-major."""

    def __init__(self, image_size: int = 8, patch=(1, 8), in_channels: int = 1, n_classes: int = 10,
                 d_model: int = 32, depth: int = 2, heads: int = 4, mlp_ratio: int = 4):
        super().__init__()
        ph, pw = patch
        if image_size % ph or image_size % pw:
            raise ValueError(f"patch {patch} does not tile a {image_size}x{image_size} image")
        self.patch = patch
        n_tokens = (image_size // ph) * (image_size // pw)
        self.embed = nn.Linear(in_channels * ph * pw, d_model)
        self.cls = nn.Parameter(0.02 * torch.randn(1, 1, d_model))
        self.pos = nn.Parameter(0.02 * torch.randn(1, n_tokens + 1, d_model))
        self.blocks = nn.ModuleList(_Block(d_model, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_classes)

    def forward(self, x):
        ph, pw = self.patch
        tokens = self.embed(rearrange(x, "b c (h ph) (w pw) -> b (h w) (c ph pw)", ph=ph, pw=pw))
        h = torch.cat([self.cls.expand(len(x), -1, -1), tokens], 1) + self.pos
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h[:, 0]))
