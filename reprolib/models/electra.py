"""ELECTRA-style pre-training (replaced token detection) with the library's GPT as a bidirectional
encoder, for

    DeBERTaV3: Improving DeBERTa using ELECTRA-Style Pre-Training with Gradient-Disentangled Embedding Sharing
    Pengcheng He, Jianfeng Gao, Weizhu Chen (ICLR 2023), https://arxiv.org/abs/2111.09543
    official code: https://github.com/microsoft/DeBERTa (DeBERTa/apps/tasks/rtd_task.py)

The encoder is reprolib.models.GPT with every attention made bidirectional in place (`bidirectional`):
the same blocks, norms, RoPE and SwiGLU, without the causal mask. The generator's output layer is tied
to its token embedding (an MLM head, as in BERT and DeBERTa); the discriminator's is one logit a token.

One step on a batch x (Sec. 2):
    x~  = x with a random 15% of positions replaced by [MASK]                 (mask_tokens)
    L_MLM = CE(G(x~), x) at the masked positions
    x^  = x~ with each masked position replaced by a sample from G's softmax   (one multinomial draw,
          temperature 1, no gradient: official make_electra_data)
    RTD label_t = [x^_t != x_t]  (only masked positions can be replaced)
    L_RTD = mean over all positions of BCE(D(x^)_t, label_t)
    L = L_MLM + lambda L_RTD                                                    (eq. 3)
Embedding sharing (ES, NES, GDES) is reprolib/layers/embedding_sharing.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..layers.embedding_sharing import share_embeddings
from .gpt import GPT, Attention, GPTConfig


class BidirectionalAttention(Attention):
    """Attention without the causal mask: every token attends to every token."""

    def forward(self, x):
        y = F.scaled_dot_product_attention(*self.qkv_heads(x), is_causal=False)
        return self.proj(rearrange(y, "b h t d -> b t (h d)"))


def bidirectional(model: GPT) -> GPT:
    """Make every attention of `model` bidirectional, in place (same parameters, same state_dict)."""
    for block in model.blocks:
        block.attn.__class__ = BidirectionalAttention
    return model


def mask_tokens(x: torch.Tensor, mask_id: int, prob: float, generator: torch.Generator | None = None):
    """(x with a random `prob` of positions set to mask_id, the boolean mask). Every selected position
    becomes [MASK] (the official RTD task: keep_prob 0, mask_prob 1); at least one position per batch."""
    masked = torch.rand(x.shape, generator=generator, device=x.device) < prob
    masked.view(-1)[0] |= ~masked.any()
    return torch.where(masked, torch.full_like(x, mask_id), x), masked


@dataclass
class ElectraOut:
    loss: torch.Tensor          # L_MLM + lambda L_RTD
    mlm: torch.Tensor           # L_MLM
    rtd: torch.Tensor           # L_RTD
    corrupted: torch.Tensor     # x^
    labels: torch.Tensor        # RTD labels, float
    rtd_logits: torch.Tensor
    masked: torch.Tensor
    mlm_correct: torch.Tensor   # generator argmax == x at the masked positions (mean)


class Electra(nn.Module):
    """A generator and a discriminator (two bidirectional GPTs) with one of the embedding sharings."""

    def __init__(self, gen_cfg: GPTConfig, disc_cfg: GPTConfig, sharing: str, mask_id: int,
                 rtd_weight: float = 50.0, mask_prob: float = 0.15):
        super().__init__()
        if gen_cfg.vocab_size != disc_cfg.vocab_size or gen_cfg.d_model != disc_cfg.d_model:
            raise ValueError("generator and discriminator must share vocabulary and width (the tables are shared)")
        self.generator = bidirectional(GPT(gen_cfg))
        self.generator.lm_head.weight = self.generator.tok_emb.weight          # tied MLM head
        self.discriminator = bidirectional(GPT(disc_cfg))
        self.discriminator.lm_head = nn.Linear(disc_cfg.d_model, 1)            # one RTD logit a token
        share_embeddings(self.generator, self.discriminator, sharing)
        self.sharing, self.mask_id, self.rtd_weight, self.mask_prob = sharing, mask_id, rtd_weight, mask_prob

    def forward(self, x: torch.Tensor, masked: torch.Tensor) -> ElectraOut:
        # the masked positions as one flat index, found once (one host sync a step): gathering rows by it
        # gives exactly what boolean indexing gives (same rows, same order), which would sync at every use
        where = masked.flatten().nonzero()[:, 0]
        x_in = torch.where(masked, torch.full_like(x, self.mask_id), x)
        logits, _ = self.generator(x_in)
        logits_m = logits.flatten(0, -2).index_select(0, where).float()        # logits[masked]
        x_m = x.flatten().index_select(0, where)                               # x[masked]
        mlm = F.cross_entropy(logits_m, x_m)
        with torch.no_grad():
            probs = logits_m.softmax(-1)                                       # temperature 1
            # a diverged generator (an lr too large in a sweep) has non-finite rows: sample those
            # uniformly so the step returns its NaN loss, which ends the run, instead of a CUDA assert
            probs = torch.where(torch.isfinite(probs).all(-1, keepdim=True), probs, 1.0 / probs.shape[-1])
            sample = torch.multinomial(probs, 1)[:, 0]
            corrupted = x_in.flatten().index_copy(0, where, sample).view_as(x_in)   # corrupted[masked] = sample
            labels = (corrupted != x).float()                                  # never set where not masked
        rtd_logits = self.discriminator(corrupted)[0][..., 0].float()
        rtd = F.binary_cross_entropy_with_logits(rtd_logits, labels)
        correct = (logits_m.argmax(-1) == x_m).float().mean()
        return ElectraOut(mlm + self.rtd_weight * rtd, mlm, rtd, corrupted, labels, rtd_logits, masked, correct)


def clip_grad_norms_(model: Electra, max_norm: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Clip the generator's and the discriminator's gradients to total norm `max_norm` each, separately.

    The official DeBERTaV3 pre-training (decoupled_training, the default of rtd_task.py) builds one
    DistributedTrainer per model ('G' on the generator, 'D' on the discriminator), and each creates its own
    optimizer over its own model's parameters with args.max_grad_norm (training/optimizer_utils.py,
    create_xoptimizer), so each model's gradient is clipped by its own norm. A table shared under ES is the
    generator's parameter (the discriminator reads it as a buffer), so it is clipped with the generator.
    Under a single global clip with lambda = 50 the discriminator's gradient sets the scale for both.
    Returns the two norms before clipping (tensors: no host sync)."""
    gen = [p for p in model.generator.parameters() if p.grad is not None]
    own = {id(p) for p in model.generator.parameters()}
    disc = [p for p in model.discriminator.parameters() if id(p) not in own and p.grad is not None]
    return (torch.nn.utils.clip_grad_norm_(gen, max_norm), torch.nn.utils.clip_grad_norm_(disc, max_norm))


def context_free_replace(x: torch.Tensor, masked: torch.Tensor, probs: torch.Tensor,
                         generator: torch.Generator | None = None):
    """(x with every masked position replaced by an independent draw from `probs` (V,), the RTD labels
    corrupted != x as bool). A corruption that does not depend on any generator: with `probs` the word
    frequencies it is what a generator that has learned only the frequencies (the unigram plateau) produces."""
    fill = torch.multinomial(probs.float(), x.numel(), replacement=True, generator=generator).view_as(x)
    corrupted = torch.where(masked, fill, x)
    return corrupted, corrupted != x


@torch.no_grad()
def rtd_bayes_posterior(hmm, corrupted: torch.Tensor, probs: torch.Tensor, replace_prob: float) -> torch.Tensor:
    """Exact p(label_t = 1 | the whole corrupted sequence) (n, T) for a class HMM (data.class_hmm) whose
    words were each, independently with probability `replace_prob`, replaced by a draw u from `probs`
    (context_free_replace after mask_tokens; label = replaced and u != w). The corruption is a noisy
    channel on the emissions, so the corrupted sequence is itself a class HMM with emissions
        e~(o | c) = (1 - p) B[c, o] + p r(o),
    whose exact class posteriors p(c_t | o) (forward-backward, mixed over topics) give
        p(label_t = 1 | o) = sum_c p(c_t = c | o) p r(o_t) (1 - B[c, o_t]) / e~(o_t | c).
    Its ROC AUC against the labels is the best any detector can reach on that copy (the Bayes AUC).
    (mask_tokens' rule of at least one masked position per batch is ignored: one position in a batch.)"""
    from ..data.class_hmm import ClassHMM
    p = replace_prob
    r = probs.to(hmm.emit)
    noisy = (1 - p) * hmm.emit + p * r[None]
    p_c = ClassHMM(hmm.start, hmm.trans, noisy, hmm.vocab_size, hmm.n_classes, hmm.n_topics).posteriors(corrupted)[1]
    b = hmm.emit[:, corrupted].permute(1, 2, 0)                     # (n, T, K): B[c, o_t]
    nb = noisy[:, corrupted].permute(1, 2, 0)
    return (p_c * p * r[corrupted][..., None] * (1 - b) / nb).sum(-1)
