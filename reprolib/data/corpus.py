"""TokenCorpus: the one container every token data set in reprolib returns.

A corpus is a train and a val stream of token ids (1-D, contiguous, no overlap), optionally a
select stream held out of train for choosing hyperparameters (so the reported val split is never
the one a learning rate was chosen on),
the vocabulary size, and, for synthetic sources, the exact entropy rate
H = lim_n H(X_n | X_<n) in nats/token: the loss floor a perfect model reaches,
so a notebook can report a model's excess loss over the source.
"""
from dataclasses import dataclass, replace
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
    select: torch.Tensor | None = None   # int64 [n_select], held out of train for tuning

    def split_select(self, frac: float = 0.05) -> "TokenCorpus":
        """A copy whose last `frac` of train becomes the selection split (train shrinks by it)."""
        if not 0.0 < frac < 1.0:
            raise ValueError(f"frac must be in (0, 1), got {frac}")
        if self.select is not None:
            raise ValueError("this corpus already has a selection split")
        n_sel = int(round(len(self.train) * frac))
        return replace(self, train=self.train[: len(self.train) - n_sel], select=self.train[len(self.train) - n_sel:],
                       info={**self.info, "select_frac_of_train": frac})
