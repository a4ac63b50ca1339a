"""Decoding a language model: greedy, nucleus (top-p) sampling, and an n-gram citation blocker; prompts
of different lengths answered greedily in one batch (greedy_complete).

    out = generate(model, contexts, 128)                                   # greedy
    out = generate(model, contexts, 128, top_p=0.9, generator=gen)         # nucleus sampling
    out = generate(model, contexts, 128, blocker=NGramBlocker(train_seqs, n=8))

Nucleus sampling (Holtzman et al. 2020, arXiv 1904.09751, Sec. 3.1): sample from the smallest set of
tokens whose probabilities, sorted in decreasing order, sum to at least p, renormalised.
The citation blocker of The Hyperfitting Phenomenon (Carlsson et al., ICLR 2025, arXiv 2412.04318):
a token that would complete an n-gram of the blocked sequences is never emitted (its logit is set to
-inf before the greedy choice or the sampling).
Every step reruns the model on the whole sequence so far (no KV cache: contexts here are short, and
the model stays the library's plain GPT); a sequence longer than the model's seq_len keeps its last
seq_len tokens as context.
"""
from __future__ import annotations

from collections import defaultdict

import torch

__all__ = ["NGramBlocker", "generate", "greedy_complete", "top_p_filter"]


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Logits with every token outside the nucleus set to -inf (rows: [..., vocab])."""
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {p}")
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    cum = sorted_logits.softmax(-1).cumsum(-1)
    drop = cum - sorted_logits.softmax(-1) >= p        # the mass before a token already reaches p
    return logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))


class NGramBlocker:
    """The n-grams of `sequences` (token lists or 1-D tensors); banned(history) lists, for each row, the
    tokens that would complete one of them after that row's last n - 1 tokens."""

    def __init__(self, sequences, n: int = 8):
        if n < 2:
            raise ValueError(f"n={n}: an n-gram blocker needs n >= 2")
        self.n = n
        self.next = defaultdict(set)
        for seq in sequences:
            s = seq.tolist() if hasattr(seq, "tolist") else list(seq)
            for i in range(len(s) - n + 1):
                self.next[tuple(s[i:i + n - 1])].add(s[i + n - 1])

    def banned(self, history: torch.Tensor) -> list[list[int]]:
        if history.shape[1] < self.n - 1:
            return [[] for _ in range(len(history))]
        return [sorted(self.next.get(tuple(row), ())) for row in history[:, -(self.n - 1):].tolist()]


@torch.no_grad()
def generate(model, contexts: torch.Tensor, new_tokens: int, top_p: float | None = None,
             generator: torch.Generator | None = None, blocker: NGramBlocker | None = None,
             return_entropy: bool = False):
    """Continue every row of contexts [B, T] by new_tokens tokens: greedy (top_p=None) or nucleus sampling.
    Returns the new tokens [B, new_tokens] (and, with return_entropy, the entropy in nats of each
    step's full next-token distribution, [B, new_tokens])."""
    seq_len = model.cfg.seq_len
    x, out, ent = contexts, [], []
    for _ in range(new_tokens):
        logits = model(x[:, -seq_len:])[0][:, -1].float()
        if return_entropy:
            logp = logits.log_softmax(-1)
            ent.append(-(logp.exp() * logp).sum(-1))
        if blocker is not None:
            for row, toks in enumerate(blocker.banned(x)):
                if toks:
                    logits[row, toks] = float("-inf")
        if top_p is None:
            nxt = logits.argmax(-1)
        else:
            probs = top_p_filter(logits, top_p).softmax(-1)
            nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        out.append(nxt)
        x = torch.cat([x, nxt[:, None]], 1)
    new = torch.stack(out, 1)
    return (new, torch.stack(ent, 1)) if return_entropy else new


@torch.no_grad()
def greedy_complete(model, prompts: list[torch.Tensor], max_new: int, pad_id: int,
                    stop_id: int | None = None) -> list[list[int]]:
    """Continue each prompt (1-D token ids) greedily, all in one batch: prompts are left-padded with
    `pad_id` to one length (pick a token the model sees between documents, e.g. a newline). Returns the
    new ids of each prompt, cut before its first `stop_id`."""
    width = max(len(p) for p in prompts)
    idx = torch.stack([torch.cat([p.new_full((width - len(p),), pad_id), p]) for p in prompts])
    new = generate(model, idx, max_new).tolist() if max_new > 0 else [[] for _ in prompts]
    return [row[:row.index(stop_id)] if stop_id is not None and stop_id in row else row for row in new]
