"""TokenCorpus: the one container every token data set in reprolib returns.

A corpus is a train and a val stream of token ids (1-D, contiguous, no overlap),
the vocabulary size, and, for synthetic sources, the exact entropy rate
H = lim_n H(X_n | X_<n) in nats/token: the loss floor a perfect model reaches,
so a notebook can report a model's excess loss over the source.
"""
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class TokenCorpus:
    train: torch.Tensor          # int64 [n_train]
    val: torch.Tensor            # int64 [n_val]
    vocab_size: int
    entropy_rate: float | None   # nats/token of the source if known exactly, None for real text
    info: dict                   # generator settings and statistics, JSON-serialisable
    decode: Callable | None = None   # ids -> str (text corpora)
    encode: Callable | None = None   # str -> int64 ids (text corpora)
