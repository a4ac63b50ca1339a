"""Embedding sharing between an ELECTRA generator and discriminator, from

    DeBERTaV3: Improving DeBERTa using ELECTRA-Style Pre-Training with Gradient-Disentangled Embedding Sharing
    Pengcheng He, Jianfeng Gao, Weizhu Chen (ICLR 2023), https://arxiv.org/abs/2111.09543
    official code: https://github.com/microsoft/DeBERTa (DeBERTa/apps/tasks/rtd_task.py)

    "nes"   no sharing: E_G and E_D are separate tables
    "es"    embedding sharing (ELECTRA): E_D = E_G, one table that receives the gradients of
            L_MLM + lambda L_RTD
    "gdes"  gradient-disentangled sharing (Sec. 3.2):  E_D = sg(E_G) + E_Delta,  E_Delta = 0 at the start;
            L_MLM updates E_G, L_RTD updates E_Delta only (the stop-gradient sg); after pre-training the
            discriminator keeps E_G + E_Delta
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MODES = ("nes", "es", "gdes")


class GDESEmbedding(nn.Module):
    """E_D = sg(E_G) + E_Delta: reads the generator's table without registering it (its parameters stay
    the generator's), and owns only E_Delta."""

    def __init__(self, source: nn.Embedding):
        super().__init__()
        object.__setattr__(self, "source", source)      # not a submodule: no second copy in state_dict
        self.delta = nn.Parameter(torch.zeros_like(source.weight))

    @property
    def weight(self) -> torch.Tensor:
        return self.source.weight.detach() + self.delta    # sg(E_G) + E_Delta

    def forward(self, idx):
        return F.embedding(idx, self.weight)

    def merged(self) -> nn.Embedding:
        """The discriminator's table after pre-training, E_G + E_Delta, as a plain nn.Embedding."""
        emb = nn.Embedding(*self.delta.shape, device=self.delta.device)
        with torch.no_grad():
            emb.weight.copy_(self.weight)
        return emb


def share_embeddings(generator: nn.Module, discriminator: nn.Module, mode: str) -> None:
    """Connect the `tok_emb` tables of two models in place, per `mode` (module docstring)."""
    if mode not in MODES:
        raise ValueError(f"embedding sharing {mode!r}; valid: {MODES}")
    if mode == "es":
        discriminator.tok_emb = generator.tok_emb
    elif mode == "gdes":
        discriminator.tok_emb = GDESEmbedding(generator.tok_emb)


def discriminator_table(discriminator: nn.Module) -> torch.Tensor:
    """The table the discriminator reads tokens through (E_G + E_Delta under GDES), detached."""
    return discriminator.tok_emb.weight.detach()
