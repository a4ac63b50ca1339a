"""Greedy and nucleus decoding, the n-gram citation blocker, text-diversity metrics and word-level
Shakespeare, against hand counts, a numpy nucleus reference and a bigram model whose greedy path is known."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from reprolib.data import shakespeare_words, split_words
from reprolib.metrics import ngram_overlap, predictive_entropy, repeated_ngram_rate, type_token_ratio
from reprolib.models import NGramBlocker, generate, top_p_filter


class Bigram(torch.nn.Module):
    """logits of the next token = table[last token]; seq_len as a GPT's cfg."""

    def __init__(self, table, seq_len=16):
        super().__init__()
        self.table = table
        self.cfg = SimpleNamespace(seq_len=seq_len)
        self.seen = []

    def forward(self, x, targets=None):
        self.seen.append(x.shape[1])
        return self.table[x], None


def _nucleus_numpy(logits, p):
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    order = np.argsort(-probs, kind="stable")
    keep, mass = [], 0.0
    for i in order:
        keep.append(i)
        mass += probs[i]
        if mass >= p:
            break
    return sorted(keep)


@pytest.mark.parametrize("p", [0.05, 0.3, 0.9, 0.999, 1.0])
def test_top_p_filter_matches_a_numpy_nucleus(p):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 30)) * 2
    kept = top_p_filter(torch.tensor(logits), p).isfinite().numpy()
    for row in range(6):
        assert sorted(np.flatnonzero(kept[row]).tolist()) == _nucleus_numpy(logits[row], p)


def test_greedy_follows_the_argmax_chain_and_truncates_to_seq_len():
    v = 7
    table = torch.full((v, v), -5.0)
    for a in range(v):
        table[a, (a * 3 + 1) % v] = 2.0
    model = Bigram(table, seq_len=4)
    out, ent = generate(model, torch.tensor([[0], [5]]), 6, return_entropy=True)
    expect = []
    for start in (0, 5):
        seq, t = [], start
        for _ in range(6):
            t = (t * 3 + 1) % v
            seq.append(t)
        expect.append(seq)
    assert out.tolist() == expect
    assert max(model.seen) == 4                      # never more than seq_len tokens of context
    row = table[0].log_softmax(-1)
    assert float(ent[0, 0]) == pytest.approx(float(-(row.exp() * row).sum()), rel=1e-5)


def test_nucleus_sampling_frequencies_and_small_p_is_greedy():
    table = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(4, 1)
    model = Bigram(table)
    gen = torch.Generator().manual_seed(0)
    draws = generate(model, torch.zeros(20000, 1, dtype=torch.long), 1, top_p=0.8, generator=gen)[:, 0]
    freq = torch.bincount(draws, minlength=4).double() / len(draws)
    assert freq[2:].sum() == 0                       # 0.5 + 0.3 reaches 0.8: tokens 2, 3 are outside the nucleus
    assert float(freq[0]) == pytest.approx(0.5 / 0.8, abs=0.015)
    assert generate(model, torch.zeros(5, 1, dtype=torch.long), 3, top_p=0.01, generator=gen).eq(0).all()


def test_blocker_bans_the_completion_of_a_listed_ngram():
    v = 10
    table = torch.zeros(v, v)
    for a in range(v):
        table[a, (a + 1) % v] = 3.0                  # greedy: 1 2 3 4 ...
        table[a, (a + 2) % v] = 2.0                  # runner-up: skip one
    model = Bigram(table)
    blocked = [list(range(1, 9))]                    # the 8-gram 1..8
    blocker = NGramBlocker(blocked, n=8)
    free = generate(model, torch.tensor([[0]]), 12)
    held = generate(model, torch.tensor([[0]]), 12, blocker=blocker)
    assert ngram_overlap(free, blocked, n=8)[0] > 0
    full = torch.cat([torch.tensor([[0]]), held], 1)
    assert ngram_overlap(full, blocked, n=8) == [0.0]
    assert held[0, :7].tolist() == [1, 2, 3, 4, 5, 6, 7] and held[0, 7] == 9   # 8 is banned, the runner-up 9 comes
    assert blocker.banned(torch.tensor([[1, 2, 3]])) == [[]]


def test_diversity_metrics_by_hand():
    seqs = [[1, 2, 1, 2, 1, 2, 3], [4, 5, 6, 7]]
    assert type_token_ratio(seqs, last=None) == [3 / 7, 1.0]
    assert type_token_ratio(seqs, last=3) == [1.0, 1.0]           # 1 2 3 / 5 6 7
    assert type_token_ratio([[1, 1, 1, 2]], last=3) == [2 / 3]
    # 2-grams of seq 0: 12 21 12 21 12 23 -> 3 distinct of 6: half are repeats
    assert repeated_ngram_rate(seqs, n=2) == [0.5, 0.0]
    assert ngram_overlap([[1, 2, 3, 9]], [[0, 1, 2, 3]], n=3) == [0.5]  # 123 occurs, 239 not


def test_predictive_entropy_of_a_uniform_model_is_log_vocab():
    model = Bigram(torch.zeros(6, 6))
    x = torch.randint(0, 6, (3, 5))
    assert predictive_entropy(model, [(x, x)]) == pytest.approx(math.log(6))


def test_word_tokens_and_the_corpus_round_trip():
    assert split_words("O, 'tis he!\nGo o'er there.") == ["O", ",", "'tis", "he", "!", "\n", "Go", "o'er", "there", "."]
    corpus = shakespeare_words(min_count=3)
    text = corpus.decode(corpus.val[:200])
    assert corpus.decode(corpus.encode(text)) == text
    assert corpus.vocab_size > 5000 and corpus.info["unk_share_train"] < 0.05
    assert len(corpus.select) > 0 and corpus.train.max() < corpus.vocab_size
