"""Rank-k SVD compression and WeLore's rank allocation, against closed forms (Eckart-Young)."""
import torch

from reprolib.layers import low_rank_factors, normalised_spectrum, rank_reduction, uniform_ranks, welore_ranks


def test_factors_are_the_eckart_young_optimum():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(40, 24, generator=g, dtype=torch.float64)
    S = torch.linalg.svdvals(W)
    for k in (1, 5, 23, 24):
        A, B = low_rank_factors(W, k)
        assert A.shape == (40, k) and B.shape == (k, 24)
        err = torch.linalg.matrix_norm(W - A @ B)
        assert torch.allclose(err, S[k:].pow(2).sum().sqrt(), atol=1e-10)   # Eckart-Young error
        assert torch.linalg.matrix_rank(A @ B) == k
        # U sqrt(S), sqrt(S) V^T: both factors carry the same singular values sqrt(sigma)
        assert torch.allclose(torch.linalg.svdvals(A), S[:k].sqrt(), atol=1e-10)
        assert torch.allclose(torch.linalg.svdvals(B), S[:k].sqrt(), atol=1e-10)
    # no random rank-5 matrix does better
    A, B = low_rank_factors(W, 5)
    for _ in range(5):
        X = torch.randn(40, 5, generator=g, dtype=torch.float64) @ torch.randn(5, 24, generator=g, dtype=torch.float64)
        assert torch.linalg.matrix_norm(W - X) > torch.linalg.matrix_norm(W - A @ B)


def test_normalised_spectrum_is_min_max():
    s = torch.tensor([10.0, 4.0, 2.0])
    assert torch.allclose(normalised_spectrum(s), torch.tensor([1.0, 0.25, 0.0]))


def test_welore_hand_example():
    # heavy-tailed spectrum: one large sigma, the rest near the minimum; flat spectrum: evenly spread
    heavy = torch.tensor([10.0, 1.2, 1.1, 1.05, 1.0])   # normalised [1, .022, .011, .0056, 0]
    flat = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])      # normalised [1, .75, .5, .25, 0]
    ranks, tau = welore_ranks({"heavy": heavy, "flat": flat}, 0.5)
    # keeping s > tau: tau in [0.25, 0.5) keeps heavy 1, flat 3 -> reduction (4 + 2) / 10 = 0.6;
    # tau in [0.022, 0.25) keeps heavy 1, flat 4 -> 0.5 exactly, the target
    assert ranks == {"heavy": 1, "flat": 4} and 0.022 <= tau < 0.25
    assert rank_reduction(ranks, {"heavy": 5, "flat": 5}) == 0.5
    assert uniform_ranks({"heavy": 5, "flat": 5}, 0.5) == {"heavy": 2, "flat": 2}   # round(2.5) = 2 (banker's)


def test_welore_hits_target_on_many_matrices():
    g = torch.Generator().manual_seed(1)
    spectra = {f"m{i}": torch.sort(torch.rand(64, generator=g) ** (1 + 3 * i / 20), descending=True).values
               for i in range(20)}
    full = {n: 64 for n in spectra}
    for target in (0.3, 0.5, 0.7):
        ranks, _ = welore_ranks(spectra, target)
        assert abs(rank_reduction(ranks, full) - target) <= 0.005
        # heavier tails (larger exponent) lose more rank
        k = [ranks[f"m{i}"] for i in range(20)]
        assert k[0] > k[-1]
        assert abs(rank_reduction(uniform_ranks(full, target), full) - target) <= 1 / 64
