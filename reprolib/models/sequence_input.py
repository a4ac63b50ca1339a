"""The collection's GPT reading a sequence of real vectors instead of tokens: the token embedding is
swapped, after construction, for a linear map from the input vectors to the model width; the lm_head's
`vocab_size` outputs become class logits. Everything else (blocks, RoPE, causal attention, the
cross-entropy of GPT.forward) is the GPT unchanged.

Used for in-context learning from (x, previous label) sequences, as in Kirsch et al., "General-Purpose
In-Context Learning by Meta-Learning Transformers" (2022), https://arxiv.org/abs/2212.04458.
"""
from __future__ import annotations

from torch import nn

from .gpt import GPT, GPTConfig


def vector_input_gpt(cfg: GPTConfig, d_in: int) -> GPT:
    """GPT(cfg) whose tok_emb is nn.Linear(d_in, d_model), initialised N(0, 0.02) like GPT's matrices
    with a zero bias: forward(x [B, L, d_in], targets [B, L]) -> (logits [B, L, vocab_size], loss)."""
    model = GPT(cfg)
    emb = nn.Linear(d_in, cfg.d_model)
    nn.init.normal_(emb.weight, std=0.02)
    nn.init.zeros_(emb.bias)
    model.tok_emb = emb.to(next(model.parameters()).device)
    return model
