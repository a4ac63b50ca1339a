"""A miniature LLaVA-style multimodal model around the collection's GPT, and the norm-aligning LayerNorm.

Bozhou Li, Xinda Xue, Sihan Yang, Yang Shi, Xinlong Chen, Yushuo Guan, Yuanxing Zhang, Wentao Zhang,
"The Unseen Bias: How Norm Discrepancy in Pre-Norm MLLMs Leads to Visual Information Loss",
arXiv 2512.08374 (https://arxiv.org/abs/2512.08374; no official code is public).

LLaVA's layout: a frozen vision encoder turns the image into patch features z; a trained projector P
maps them to the language model's width; the visual tokens v = P(z) go in front of the question's token
embeddings, and the pre-norm language model reads the whole row,

    h_0 = [P(z_1) ... P(z_N), e(w_1) ... e(w_M)],      h_{l+1} = h_l + f_l(h_l)   (f_l: norm, attention, MLP)

The paper's point: visual tokens leave the projector with norms far above the text embeddings', and a
pre-norm block's update f_l(h_l) reads only the normalised h_l, so its size does not grow with ||h_l||.
A token's relative change per block, ||h_{l+1} - h_l|| / ||h_l||, is then much smaller for the visual
tokens ("representational inertia"). The fix: one LayerNorm after the projector, v = LN(P(z)), with its
gain initialised so that ||v|| equals the mean text-token norm: LN's output before the gain has norm
sqrt(d) exactly (zero mean, unit biased variance over d channels), so the gain is
gamma_0 = (mean text-token norm) / sqrt(d) (`aligned_layernorm`). This initial value is our reading of
the paper's "carefully initialized" LayerNorm; it is not checked against the paper's text.

`RandomPatchEncoder` stands in for the frozen pretrained vision encoder: 28 x 28 images cut into a 4 x 4
grid of 7 x 7 patches, each through a fixed random two-layer MLP; its output is scaled by a fixed
factor (`calibrate` sets it) so that the visual tokens start at a chosen norm.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .gpt import GPT


class RandomPatchEncoder(nn.Module):
    """Frozen random features of 7 x 7 patches: [n, 28, 28] -> [n, 16, width]. Nothing in it trains."""

    def __init__(self, width: int, patch: int = 7, hidden: int = 256, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        n_in = patch * patch
        self.patch = patch
        self.register_buffer("w1", torch.randn(n_in, hidden, generator=g) / math.sqrt(n_in))
        self.register_buffer("b1", torch.randn(hidden, generator=g) * 0.5)
        self.register_buffer("w2", torch.randn(hidden, width, generator=g) / math.sqrt(hidden))
        self.register_buffer("scale", torch.ones(()))

    def forward(self, images):
        p = rearrange(images, "n (gh ph) (gw pw) -> n (gh gw) (ph pw)", ph=self.patch, pw=self.patch)
        p = (p - 0.5) / 0.5
        return self.scale * (F.gelu(p @ self.w1 + self.b1) @ self.w2)


def aligned_layernorm(width: int, target_norm: float) -> nn.LayerNorm:
    """LayerNorm whose output norm starts at `target_norm`: gain gamma_0 = target_norm / sqrt(width), shift 0."""
    ln = nn.LayerNorm(width)
    with torch.no_grad():
        ln.weight.fill_(target_norm / math.sqrt(width))
    return ln


class TinyMLLM(nn.Module):
    """Visual tokens then question tokens through a GPT's blocks; the answer is read at the last position.

    forward(images, questions) -> logits [n, vocab] at the last token; images=None: a text-only question.
    forward(..., states=True) also returns the residual stream [h_0, ..., h_L], each [n, T, d], with the
    16 visual tokens (if any) first. `post_norm` is the module after the projector (Identity: LLaVA)."""

    def __init__(self, gpt: GPT, encoder: RandomPatchEncoder, projector_hidden: int | None = None):
        super().__init__()
        d = gpt.cfg.d_model
        width = encoder.w2.shape[1]
        hid = projector_hidden or d
        self.gpt, self.encoder = gpt, encoder
        self.projector = nn.Sequential(nn.Linear(width, hid), nn.GELU(), nn.Linear(hid, d))   # LLaVA-1.5's mlp2x_gelu
        self.post_norm = nn.Identity()

    def visual_tokens(self, images):
        return self.post_norm(self.projector(self.encoder(images)))

    def embed(self, images, questions):
        text = self.gpt.tok_emb(questions)
        if images is None:
            return text
        return torch.cat([self.visual_tokens(images).to(text.dtype), text], 1)

    def forward(self, images, questions, states: bool = False):
        x = self.embed(images, questions)
        hs = [x]
        for block in self.gpt.blocks:
            x, _ = block(x)
            hs.append(x)
        logits = self.gpt.lm_head(self.gpt.norm_f(x[:, -1]))
        return (logits, hs) if states else logits

    @torch.no_grad()
    def text_norm(self) -> float:
        """Mean norm of the text-token embeddings (the rows of the embedding table)."""
        return float(self.gpt.tok_emb.weight.norm(dim=-1).mean())

    @torch.no_grad()
    def calibrate(self, images, target_norm: float) -> float:
        """Set the encoder's fixed output scale so that the projector's outputs (before any post-norm) have
        mean norm `target_norm` on these images; returns the scale. The projector is re-read after, so
        call it once, right after construction."""
        self.encoder.scale.fill_(1.0)
        p = self.projector(self.encoder(images))
        # the projector's biases make its output not exactly linear in the scale: a few fixed-point rounds
        for _ in range(20):
            ratio = target_norm / float(p.norm(dim=-1).mean())
            self.encoder.scale.mul_(ratio)
            p = self.projector(self.encoder(images))
            if abs(ratio - 1) < 1e-6:
                break
        return float(self.encoder.scale)

    def insert_post_norm(self, kind: str) -> None:
        """The paper's fix, after the projector: 'aligned' (gain gamma_0 = mean text norm / sqrt(d)),
        'unit' (a plain LayerNorm, gain 1) or 'none'."""
        d = self.gpt.cfg.d_model
        if kind == "aligned":
            self.post_norm = aligned_layernorm(d, self.text_norm())
        elif kind == "unit":
            self.post_norm = nn.LayerNorm(d)
        elif kind == "none":
            self.post_norm = nn.Identity()
        else:
            raise ValueError(f"post-projector norm {kind!r}; valid: 'none', 'aligned', 'unit'")
        self.post_norm.to(self.gpt.tok_emb.weight.device)
