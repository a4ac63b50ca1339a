"""Synthetic "clinical notes": a domain with countable knowledge, in any character vocabulary.

A domain corpus for pruning and continual-learning experiments whose knowledge can be counted: `n`
invented patients, each with one of `k` invented drugs (the facts), written as short notes in a few
templates,

    "Patient Bakiro takes velomab. "   "Bakiro was prescribed velomab. "   ...

Names and drugs are made of consonant-vowel syllables, so they are new words for a model trained on
English text. `fact_choices` builds the multiple-choice test of the facts: the prompt "Patient Bakiro
takes" and every drug as a candidate continuation; a model knows a fact when the true drug has the
highest log-likelihood (chance 1 / k).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

TEMPLATES = ("Patient {e} takes {a}. ", "{e} was prescribed {a}. ", "The chart of {e} lists {a}. ",
             "For {e}, the doctor ordered {a}. ")
PROMPT = "Patient {e} takes"
_CONS, _VOWELS = "bdfgklmnprstvz", "aeiou"
_SUFFIXES = ("mab", "zine", "pril", "olol", "statin")


@dataclass
class Facts:
    entities: list      # patient names
    drugs: list         # drug names
    answer: torch.Tensor   # [n] the drug index of each patient


def _word(g: torch.Generator, syllables: int) -> str:
    idx = torch.randint(0, 10 ** 6, (2 * syllables,), generator=g).tolist()
    return "".join(_CONS[idx[2 * i] % len(_CONS)] + _VOWELS[idx[2 * i + 1] % len(_VOWELS)] for i in range(syllables))


def make_facts(n_entities: int = 500, n_drugs: int = 20, seed: int = 0) -> Facts:
    """n distinct patient names (three syllables, capitalised), k distinct drugs, one drug per patient."""
    g = torch.Generator().manual_seed(seed)
    names, drugs = [], []
    while len(names) < n_entities:
        w = _word(g, 3).capitalize()
        if w not in names:
            names.append(w)
    while len(drugs) < n_drugs:
        w = _word(g, 2) + _SUFFIXES[len(drugs) % len(_SUFFIXES)]
        if w not in drugs:
            drugs.append(w)
    return Facts(names, drugs, torch.randint(0, n_drugs, (n_entities,), generator=g))


def notes_text(facts: Facts, n_notes: int, seed: int) -> str:
    """n_notes notes, each about a uniformly drawn patient in a uniformly drawn template."""
    g = torch.Generator().manual_seed(seed)
    who = torch.randint(0, len(facts.entities), (n_notes,), generator=g).tolist()
    how = torch.randint(0, len(TEMPLATES), (n_notes,), generator=g).tolist()
    return "".join(TEMPLATES[t].format(e=facts.entities[i], a=facts.drugs[facts.answer[i]]) for i, t in zip(who, how))


def fact_choices(facts: Facts, encode) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The multiple-choice fact test as token rows: (tokens [n * k, T], scored [n * k, T] bool, answer [n]).
    Row i * k + j is patient i's prompt followed by " <drug j>."; `scored` marks the positions whose next
    token belongs to the candidate (its log-likelihood is summed). Rows are right-padded with the prompt's
    first token, never scored."""
    rows, marks = [], []
    for e in facts.entities:
        prompt = encode(PROMPT.format(e=e)).tolist()
        for d in facts.drugs:
            cand = encode(f" {d}.").tolist()
            rows.append(prompt + cand)
            marks.append([False] * (len(prompt) - 1) + [True] * len(cand) + [False])
    T = max(map(len, rows))
    tokens = torch.tensor([r + [r[0]] * (T - len(r)) for r in rows])
    scored = torch.tensor([m + [False] * (T - len(m)) for m in marks])
    return tokens, scored, facts.answer.clone()


@torch.no_grad()
def fact_accuracy(model, tokens, scored, answer, n_choices: int, chunk: int = 2000) -> float:
    """Share of facts whose true candidate has the highest summed log-likelihood under model(idx) -> (logits, _)."""
    total = []
    for i in range(0, len(tokens), chunk):
        x = tokens[i:i + chunk]
        logits = model(x[:, :-1])[0].float()
        lp = torch.log_softmax(logits, -1).gather(-1, x[:, 1:, None])[..., 0]
        total.append((lp * scored[i:i + chunk, :-1]).sum(1))
    pick = torch.cat(total).view(-1, n_choices).argmax(1)
    return float((pick == answer.to(pick.device)).float().mean())
