"""A miniature visual question answering set on Fashion-MNIST, with text-only questions beside it.

A multimodal language model reads an image as a row of visual tokens followed by a question; it
answers with one token. This module makes the questions; the images come from `data.fashion_mnist`.
Every question is five tokens, `[type, a1, a2, a3, ?]` (unused slots hold `_`), and the answer is the
token the model should predict at `?`:

    what _ _ _ ?        the item's class                                   (10-way, needs the image)
    is c_k _ _ ?        yes / no: is the item class k (k true half the time) (needs the image)
    or c_k c_j _ ?      which of the two classes it is (one of them is true) (needs the image)
    sum d_a d_b d_c ?   (a + b + c) mod 10 as a digit                      (text only: no image)

The text-only questions stand in for a language-only benchmark: their 1,000 digit triples are split
once, by a fixed permutation, into train / validation / test triples, so a test triple is never seen in
training and answering it takes the rule, not a memorised table.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

CLASS_TOKENS = tuple(f"c{k}" for k in range(10))
DIGIT_TOKENS = tuple(str(k) for k in range(10))
VOCAB = ("_", "?", "what", "is", "or", "sum", "yes", "no", *CLASS_TOKENS, *DIGIT_TOKENS)
TOKEN = {t: i for i, t in enumerate(VOCAB)}
MULTIMODAL_TYPES = ("what", "is", "or")
QUESTION_LEN = 5
_C0, _D0 = TOKEN["c0"], TOKEN["0"]


def multimodal_questions(labels: torch.Tensor, kind: str, generator: torch.Generator | None = None):
    """(questions [n, 5], answers [n]) of one type about images with these class labels."""
    n, dev = len(labels), labels.device
    q = torch.full((n, QUESTION_LEN), TOKEN["_"], dtype=torch.long, device=dev)
    q[:, 0], q[:, -1] = TOKEN[kind], TOKEN["?"]
    other = (labels + torch.randint(1, 10, (n,), generator=generator, device=dev)) % 10   # any class but the true one
    if kind == "what":
        return q, labels + _C0
    if kind == "is":
        truth = torch.rand(n, generator=generator, device=dev) < 0.5
        q[:, 1] = torch.where(truth, labels, other) + _C0
        return q, torch.where(truth, TOKEN["yes"], TOKEN["no"])
    if kind == "or":
        swap = torch.rand(n, generator=generator, device=dev) < 0.5
        q[:, 1] = torch.where(swap, other, labels) + _C0
        q[:, 2] = torch.where(swap, labels, other) + _C0
        return q, labels + _C0
    raise ValueError(f"question type {kind!r}; valid: {MULTIMODAL_TYPES}")


def sum_questions(triples: torch.Tensor):
    """(questions [n, 5], answers [n]) for digit triples [n, 3]: `sum a b c ?` -> (a + b + c) mod 10."""
    q = torch.cat([torch.full_like(triples[:, :1], TOKEN["sum"]), triples + _D0,
                   torch.full_like(triples[:, :1], TOKEN["?"])], 1)
    return q, triples.sum(1) % 10 + _D0


def triple_splits(fractions=(0.7, 0.1, 0.2), seed: int = 0, device=None) -> dict:
    """The 1,000 digit triples split into {'train', 'val', 'test'} [n, 3] by one fixed permutation."""
    grid = torch.cartesian_prod(*[torch.arange(10)] * 3)
    perm = torch.randperm(len(grid), generator=torch.Generator().manual_seed(seed))
    cuts = [round(sum(fractions[:i]) * len(grid)) for i in range(4)]
    return {name: grid[perm[cuts[i]:cuts[i + 1]]].to(device) for i, name in enumerate(("train", "val", "test"))}


@dataclass
class VQABatch:
    images: torch.Tensor      # [n, 28, 28] pixels of the multimodal questions
    questions: torch.Tensor   # [n, 5]
    answers: torch.Tensor     # [n]
    kinds: torch.Tensor       # [n] index into MULTIMODAL_TYPES
    text_questions: torch.Tensor   # [m, 5] text-only questions (no image)
    text_answers: torch.Tensor     # [m]


def vqa_batch(images, labels, triples, n: int, m: int, generator: torch.Generator) -> VQABatch:
    """n random image questions (uniform over the three types) and m text-only sum questions."""
    dev = images.device
    idx = torch.randint(0, len(images), (n,), generator=generator, device=dev)
    kinds = torch.randint(0, len(MULTIMODAL_TYPES), (n,), generator=generator, device=dev)
    q = torch.empty(n, QUESTION_LEN, dtype=torch.long, device=dev)
    a = torch.empty(n, dtype=torch.long, device=dev)
    for k, kind in enumerate(MULTIMODAL_TYPES):   # every type drawn for all n, kept where chosen: one shape per step
        qk, ak = multimodal_questions(labels[idx], kind, generator)
        pick = kinds == k   # selected with torch.where, not a boolean index: no host sync on a GPU
        q, a = torch.where(pick[:, None], qk, q), torch.where(pick, ak, a)
    tq, ta = sum_questions(triples[torch.randint(0, len(triples), (m,), generator=generator, device=dev)])
    return VQABatch(images[idx], q, a, kinds, tq, ta)


def vqa_eval_set(images, labels, triples, seed: int = 0) -> VQABatch:
    """A fixed evaluation set: every image asked each of the three question types, every triple once."""
    g = torch.Generator(device=images.device).manual_seed(seed)
    qs, ans = zip(*[multimodal_questions(labels, kind, g) for kind in MULTIMODAL_TYPES])
    kinds = torch.arange(len(MULTIMODAL_TYPES), device=images.device).repeat_interleave(len(labels))
    tq, ta = sum_questions(triples)
    return VQABatch(images.repeat(len(MULTIMODAL_TYPES), 1, 1), torch.cat(qs), torch.cat(ans), kinds, tq, ta)
