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

    def unigram_loss(self, split: str = "val") -> float:
        """Cross-entropy (nats/token) of `split` under the train stream's token frequencies (add-one
        smoothed): the loss of the best model that ignores context, the yardstick a trained LM must
        clearly beat."""
        counts = torch.bincount(self.train, minlength=self.vocab_size).double() + 1
        return float(-(counts / counts.sum()).log()[getattr(self, split)].mean())

    def ngram_entropy(self, context: int = 0) -> float:
        """Plug-in entropy H(X_t | previous `context` tokens) of the train stream, nats/token
        (context=0: the unigram entropy; 1: the bigram model's conditional entropy)."""
        x, V = self.train.long(), self.vocab_size

        def h(n):
            if n == 0:
                return 0.0
            ids = torch.zeros(len(x) - n + 1, dtype=torch.long)
            for i in range(n):   # the n-gram as one base-V number
                ids = ids * V + x[i:len(x) - n + 1 + i]
            c = torch.unique(ids, return_counts=True)[1].double()
            p = c / c.sum()
            return float(-(p * p.log()).sum())

        return h(context + 1) - h(context)

    def split_select(self, frac: float = 0.05) -> "TokenCorpus":
        """A copy whose last `frac` of train becomes the selection split (train shrinks by it)."""
        if not 0.0 < frac < 1.0:
            raise ValueError(f"frac must be in (0, 1), got {frac}")
        if self.select is not None:
            raise ValueError("this corpus already has a selection split")
        n_sel = int(round(len(self.train) * frac))
        return replace(self, train=self.train[: len(self.train) - n_sel], select=self.train[len(self.train) - n_sel:],
                       info={**self.info, "select_frac_of_train": frac})
