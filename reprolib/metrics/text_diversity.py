"""Diversity and copying of generated token sequences, and the entropy of a model's predictions.

type_token_ratio: distinct tokens / tokens, over the last `last` tokens of each sequence; The
Hyperfitting Phenomenon (Carlsson et al., ICLR 2025, arXiv 2412.04318) reports it over the last 96
tokens of a continuation (official src/validation.py). A greedy decoder caught in a loop scores low.
repeated_ngram_rate: share of a sequence's n-grams that already occurred earlier in it.
ngram_overlap: share of a sequence's n-grams that occur in reference sequences (copying).
predictive_entropy: mean entropy (nats) of the next-token distributions on fixed batches.
"""
import torch

__all__ = ["ngram_overlap", "ngrams", "predictive_entropy", "repeated_ngram_rate", "type_token_ratio"]


def _rows(seqs):
    return [s.tolist() if hasattr(s, "tolist") else list(s) for s in seqs]


def ngrams(seq, n: int) -> list[tuple]:
    s = list(seq)
    return [tuple(s[i:i + n]) for i in range(len(s) - n + 1)]


def type_token_ratio(seqs, last: int | None = 96) -> list[float]:
    """Per sequence: number of distinct tokens / number of tokens, over its last `last` tokens (None: all)."""
    out = []
    for s in _rows(seqs):
        s = s[-last:] if last else s
        out.append(len(set(s)) / len(s) if s else float("nan"))
    return out


def repeated_ngram_rate(seqs, n: int = 4) -> list[float]:
    """Per sequence: share of its n-grams that are repeats of an earlier n-gram of the same sequence."""
    out = []
    for s in _rows(seqs):
        grams = ngrams(s, n)
        out.append(1 - len(set(grams)) / len(grams) if grams else float("nan"))
    return out


def ngram_overlap(seqs, reference, n: int = 8) -> list[float]:
    """Per sequence: share of its n-grams that occur anywhere in the reference sequences."""
    ref = {g for r in _rows(reference) for g in ngrams(r, n)}
    out = []
    for s in _rows(seqs):
        grams = ngrams(s, n)
        out.append(sum(g in ref for g in grams) / len(grams) if grams else float("nan"))
    return out


@torch.no_grad()
def predictive_entropy(model, batches) -> float:
    """Mean entropy (nats) of the model's next-token distributions over every position of the batches
    ((x, y) pairs; only x is read)."""
    total, count = 0.0, 0
    for x, _ in batches:
        logp = model(x)[0].float().log_softmax(-1)
        total += float(-(logp.exp() * logp).sum(-1).sum())
        count += x.numel()
    return total / count
