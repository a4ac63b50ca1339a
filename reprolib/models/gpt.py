"""One configurable small GPT: options, not copies.

A decoder-only transformer in the LLaMA style: pre-norm (RMSNorm or LayerNorm), rotary position
embeddings (RoFormer, arXiv 2104.09864), SwiGLU MLP (Shazeer, arXiv 2002.05202), causal
attention through F.scaled_dot_product_attention.

Options:
  attn="mha"  multi-head attention; the KV cache holds 2 * n_head * head_dim numbers a token.
  attn="mla"  multi-head latent attention (DeepSeek-V2, arXiv 2405.04434, eqs. 9-19): keys and
              values are up-projected from a shared latent c = W_dkv h of size d_latent, and a
              small decoupled RoPE key k_R = RoPE(W_kr h) of size rope_dim is shared by all heads:
                  q_i = [W_q,i h ; RoPE(W_qr,i h)],   k_i = [W_uk,i c ; k_R],   v_i = W_uv,i c
              The cache holds only c and k_R: d_latent + rope_dim numbers a token.
  mlp="dense" SwiGLU: W2 (silu(W1 x) * W3 x).
  mlp="moe"   n_experts SwiGLU experts, top-k routing with the renormalised softmax gates and the
              Switch-Transformer load-balancing loss (Fedus et al., arXiv 2101.03961, eq. 4):
                  aux = n_experts * sum_i f_i P_i,   f_i = share of routed (token, slot) pairs to
                  expert i,  P_i = mean router probability of expert i.
              All experts are computed densely and combined with gates that are zero outside the
              top-k: the output equals sparse routing, which is simpler and fast at these sizes.
  norm_position="pre"   x + f(norm(x)) in every block and a final norm (the default).
  norm_position="post"  norm(x + f(x)), as the original Transformer; no final norm.
  norm_position="none"  x + f(x): no normalisation layers at all.
Attention.logits(x) gives the causal attention logits q k^T / sqrt(d) that the fused kernel uses,
for attention maps and their entropy (reprolib/metrics/attention.py).
"""
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


@dataclass
class GPTConfig:
    vocab_size: int
    seq_len: int = 256
    n_layer: int = 4
    d_model: int = 256
    n_head: int = 4
    norm: str = "rms"            # "rms" | "layer"
    norm_position: str = "pre"   # "pre" | "post" | "none"
    attn: str = "mha"            # "mha" | "mla"
    d_latent: int | None = None  # MLA latent size; default d_model // 4
    rope_dim: int = 16           # MLA decoupled RoPE dimension
    mlp: str = "dense"           # "dense" | "moe"
    mlp_hidden: int | None = None  # SwiGLU width; default 8/3 d_model rounded up to 32
    n_experts: int = 8
    top_k: int = 2
    rope_base: float = 10000.0

    def __post_init__(self):
        for key, valid in (("norm", ("rms", "layer")), ("attn", ("mha", "mla")), ("mlp", ("dense", "moe")),
                           ("norm_position", ("pre", "post", "none"))):
            if getattr(self, key) not in valid:
                raise ValueError(f"GPTConfig.{key}={getattr(self, key)!r}; valid: {valid}")
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_head={self.n_head}")
        if self.d_latent is None:
            self.d_latent = self.d_model // 4
        if self.mlp_hidden is None:
            self.mlp_hidden = -(-int(8 * self.d_model / 3) // 32) * 32
        if not 1 <= self.top_k <= self.n_experts:
            raise ValueError(f"top_k={self.top_k} must be in [1, n_experts={self.n_experts}]")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head


def rope_tables(seq_len: int, dim: int, base: float, device=None):
    inv_freq = base ** (-torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)
    angles = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    """Rotate pairs (x1, x2) of the last dim by position-dependent angles; x: (..., T, dim)."""
    T = x.size(-2)
    x1, x2 = x.float().chunk(2, dim=-1)
    cos, sin = cos[:T], sin[:T]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)


def make_norm(cfg: GPTConfig) -> nn.Module:
    if cfg.norm_position == "none":
        return nn.Identity()
    return nn.RMSNorm(cfg.d_model) if cfg.norm == "rms" else nn.LayerNorm(cfg.d_model, bias=False)


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        d, h, dh = cfg.d_model, cfg.n_head, cfg.head_dim
        if cfg.attn == "mha":
            self.qkv = nn.Linear(d, 3 * d, bias=False)
            rope = rope_tables(cfg.seq_len, dh, cfg.rope_base)
        else:
            self.q = nn.Linear(d, d, bias=False)
            self.q_rope = nn.Linear(d, h * cfg.rope_dim, bias=False)
            self.kv_down = nn.Linear(d, cfg.d_latent, bias=False)
            self.kv_norm = nn.RMSNorm(cfg.d_latent)
            self.k_up = nn.Linear(cfg.d_latent, d, bias=False)
            self.v_up = nn.Linear(cfg.d_latent, d, bias=False)
            self.k_rope = nn.Linear(d, cfg.rope_dim, bias=False)
            rope = rope_tables(cfg.seq_len, cfg.rope_dim, cfg.rope_base)
        self.register_buffer("cos", rope[0], persistent=False)
        self.register_buffer("sin", rope[1], persistent=False)
        self.proj = nn.Linear(d, d, bias=False)

    def qkv_heads(self, x):
        """q, k, v of shape (b, h, t, d), RoPE applied."""
        h = self.cfg.n_head
        if self.cfg.attn == "mha":
            q, k, v = rearrange(self.qkv(x), "b t (three h d) -> three b h t d", three=3, h=h)
            q, k = apply_rope(q, self.cos, self.sin), apply_rope(k, self.cos, self.sin)
        else:
            c = self.kv_norm(self.kv_down(x))  # the cached latent
            heads = lambda z: rearrange(z, "b t (h d) -> b h t d", h=h)
            k_r = apply_rope(self.k_rope(x)[:, None], self.cos, self.sin)  # one RoPE key for all heads
            q = torch.cat([heads(self.q(x)), apply_rope(heads(self.q_rope(x)), self.cos, self.sin)], -1)
            k = torch.cat([heads(self.k_up(c)), k_r.expand(-1, h, -1, -1)], -1)
            v = heads(self.v_up(c))
        return q, k, v

    def forward(self, x):
        y = F.scaled_dot_product_attention(*self.qkv_heads(x), is_causal=True)
        return self.proj(rearrange(y, "b h t d -> b t (h d)"))

    def logits(self, x):
        """The causal attention logits q k^T / sqrt(d) in float32, -inf above the diagonal:
        (b, h, t, t); softmax over the last dim gives the attention weights forward() applies."""
        q, k, _ = self.qkv_heads(x)
        s = q.float() @ k.float().transpose(-2, -1) / math.sqrt(q.size(-1))
        future = torch.ones(s.shape[-2:], dtype=torch.bool, device=s.device).triu(1)
        return s.masked_fill(future, float("-inf"))

    def kv_cache_numbers_per_token(self) -> int:
        cfg = self.cfg
        return 2 * cfg.d_model if cfg.attn == "mha" else cfg.d_latent + cfg.rope_dim


class SwiGLU(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.d_model, cfg.mlp_hidden, bias=False)
        self.w3 = nn.Linear(cfg.d_model, cfg.mlp_hidden, bias=False)
        self.w2 = nn.Linear(cfg.mlp_hidden, cfg.d_model, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x)), x.new_zeros(())


class MoE(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        E, d, hid = cfg.n_experts, cfg.d_model, cfg.mlp_hidden
        self.router = nn.Linear(d, E, bias=False)
        # (expert, out, in) like nn.Linear.weight, so Muon's row = an output neuron
        self.w1 = nn.Parameter(torch.empty(E, hid, d))
        self.w3 = nn.Parameter(torch.empty(E, hid, d))
        self.w2 = nn.Parameter(torch.empty(E, d, hid))

    def forward(self, x):
        cfg = self.cfg
        probs = self.router(x).float().softmax(-1)                      # (b, t, E)
        top_p, top_i = probs.topk(cfg.top_k, dim=-1)
        gates = torch.zeros_like(probs).scatter(-1, top_i, top_p / top_p.sum(-1, keepdim=True))
        hidden = F.silu(torch.einsum("btd,ehd->bteh", x, self.w1)) * torch.einsum("btd,ehd->bteh", x, self.w3)
        y = torch.einsum("bteh,edh,bte->btd", hidden, self.w2, gates.type_as(x))
        routed = torch.zeros_like(probs).scatter(-1, top_i, 1.0)
        f = routed.mean(dim=(0, 1)) / cfg.top_k
        aux = cfg.n_experts * (f * probs.mean(dim=(0, 1))).sum()
        return y, aux


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.norm1, self.norm2 = make_norm(cfg), make_norm(cfg)
        self.attn = Attention(cfg)
        self.mlp = SwiGLU(cfg) if cfg.mlp == "dense" else MoE(cfg)
        self.post = cfg.norm_position == "post"

    def forward(self, x):
        if self.post:
            x = self.norm1(x + self.attn(x))
            y, aux = self.mlp(x)
            return self.norm2(x + y), aux
        x = x + self.attn(self.norm1(x))
        y, aux = self.mlp(self.norm2(x))
        return x + y, aux


class GPT(nn.Module):
    """forward(idx, targets=None) -> (logits, mean cross-entropy or None); self.aux_loss holds
    the summed MoE load-balancing loss of the last forward (0 for dense MLPs)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm_f = make_norm(cfg) if cfg.norm_position == "pre" else nn.Identity()
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.aux_loss = torch.zeros(())
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        """N(0, 0.02), residual-branch outputs scaled by 1/sqrt(2 n_layer) (GPT-2)."""
        for name, p in self.named_parameters():
            if p.ndim >= 2:
                std = 0.02 / (2 * self.cfg.n_layer) ** 0.5 if name.endswith(("proj.weight", "w2.weight", "w2")) else 0.02
                nn.init.normal_(p, std=std)

    def forward(self, idx, targets=None):
        if idx.size(1) > self.cfg.seq_len:
            raise ValueError(f"sequence of {idx.size(1)} tokens exceeds seq_len={self.cfg.seq_len}")
        x = self.tok_emb(idx)
        aux = 0.0
        for block in self.blocks:
            x, a = block(x)
            aux = aux + a
        self.aux_loss = aux
        logits = self.lm_head(self.norm_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        return logits, loss

    def n_params(self, active: bool = False) -> int:
        """Parameters; with active=True, MoE experts count top_k / n_experts of theirs."""
        total = 0
        for name, p in self.named_parameters():
            share = self.cfg.top_k / self.cfg.n_experts if active and isinstance(p, nn.Parameter) \
                and self.cfg.mlp == "moe" and ".mlp.w" in name else 1.0
            total += int(p.numel() * share)
        return total

    def kv_cache_bytes_per_token(self, bytes_per_number: int = 2) -> int:
        """KV-cache memory a generated token adds, over all layers (bf16 by default)."""
        return sum(b.attn.kv_cache_numbers_per_token() for b in self.blocks) * bytes_per_number

    def config_dict(self) -> dict:
        return asdict(self.cfg)
