"""sigmaReparam linear layers: the official recurrence, torch's spectral_norm and the SVD as oracles."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as torch_spectral_norm

from reprolib.layers import SigmaReparamLinear, sigma_reparam_linears
from reprolib.models import GPT, GPTConfig


def layer(m=12, n=7, seed=0, **kw):
    torch.manual_seed(seed)
    return SigmaReparamLinear(n, m, bias=True, **kw)


def svd_sigma(W):
    return torch.linalg.matrix_norm(W.detach().double(), ord=2).item()


def test_starts_as_the_plain_layer_with_the_exact_sigma():
    lin = layer()
    assert lin.sigma_est.item() == pytest.approx(svd_sigma(lin.weight), rel=1e-6)
    assert lin.gamma.item() == pytest.approx(svd_sigma(lin.weight), rel=1e-6)
    x = torch.randn(5, 7)
    assert torch.allclose(lin(x), F.linear(x, lin.weight, lin.bias), atol=1e-6)


def test_one_training_step_follows_the_official_power_iteration():
    """vision/layers.py SpectralNormedWeight.get_sigma, written out independently in float64."""
    lin = layer()
    with torch.no_grad():
        lin.weight.add_(0.3 * torch.randn_like(lin.weight))   # u is now stale
    W, u0 = lin.weight.detach().double(), lin.u[0].double()
    v = W @ u0
    v = v / v.norm()
    u = W.T @ v
    u = u / u.norm()
    sigma = v @ W @ u
    lin.train()
    got = lin.sigma()
    assert got.item() == pytest.approx(sigma.item(), rel=1e-6)
    assert torch.allclose(lin.u[0].double(), u, atol=1e-6)
    assert lin.sigma_est.item() == pytest.approx(sigma.item(), rel=1e-6)


def test_eval_takes_the_step_without_storing_it():
    lin = layer()
    with torch.no_grad():
        lin.weight.add_(0.3 * torch.randn_like(lin.weight))
    u, s = lin.u.clone(), lin.sigma_est.clone()
    lin.eval()
    a = lin.sigma()
    b = lin.sigma()
    assert torch.equal(lin.u, u) and torch.equal(lin.sigma_est, s) and a.item() == b.item()


def test_repeated_steps_reach_the_svd_spectral_norm():
    lin = layer(m=20, n=9, seed=1)
    with torch.no_grad():
        lin.u.copy_(F.normalize(torch.randn(9), dim=0))   # a random start, not the SVD vector
    lin.train()
    for _ in range(200):
        lin.sigma()
    assert lin.sigma_est.item() == pytest.approx(svd_sigma(lin.weight), rel=1e-5)
    assert lin.exact_sigma().item() == pytest.approx(svd_sigma(lin.weight), rel=1e-6)
    # the reparameterised weight then has spectral norm |gamma|
    assert svd_sigma(lin.effective_weight()) == pytest.approx(abs(lin.gamma.item()), rel=1e-5)


def test_matches_torch_spectral_norm_value_and_gradient():
    """torch.nn.utils.parametrizations.spectral_norm with its (u, v) set to the vectors our step
    lands on: W / sigma and its gradient (through W in sigma only) must agree."""
    lin = layer(m=10, n=6, seed=2)
    with torch.no_grad():
        lin.weight.add_(0.2 * torch.randn_like(lin.weight))
    ref = torch_spectral_norm(nn.Linear(6, 10, bias=False), n_power_iterations=1)
    with torch.no_grad():
        ref.parametrizations.weight.original.copy_(lin.weight)
        W = lin.weight.detach()
        v = F.normalize(W @ lin.u[0], dim=0)
        u = F.normalize(W.T @ v, dim=0)
        ref.parametrizations.weight[0]._u.copy_(v)   # torch's _u is the left vector, _v the right
        ref.parametrizations.weight[0]._v.copy_(u)
    lin.eval(), ref.eval()
    ours = lin.effective_weight() / lin.gamma
    theirs = ref.weight
    assert torch.allclose(ours, theirs, atol=1e-6)
    g = torch.randn_like(ours)
    (ours * g).sum().backward()
    (theirs * g).sum().backward()
    assert torch.allclose(lin.weight.grad, ref.parametrizations.weight.original.grad, atol=1e-5)


def test_gamma_gradient_is_the_normalised_output():
    lin = layer()
    x, g = torch.randn(4, 7), torch.randn(4, 12)
    lin.eval()
    (lin(x) * g).sum().backward()
    with torch.no_grad():
        expected = (g * F.linear(x, lin.weight / lin.sigma())).sum()
    assert lin.gamma.grad.item() == pytest.approx(expected.item(), rel=1e-5)


def test_blocks_are_separate_layers():
    """blocks=3 (a fused q, k, v projection) equals three sigmaReparam layers on the row blocks."""
    torch.manual_seed(3)
    fused = SigmaReparamLinear(8, 3 * 5, bias=False, blocks=3)
    with torch.no_grad():
        fused.weight.add_(0.3 * torch.randn_like(fused.weight))   # the stored u are now stale
    parts = []
    for k, w in enumerate(fused.weight.detach().chunk(3, 0)):
        part = SigmaReparamLinear(8, 5, bias=False)
        with torch.no_grad():
            part.weight.copy_(w)
            part.u.copy_(fused.u[k])
            part.gamma.copy_(fused.gamma[k])
        parts.append(part)
    x, g = torch.randn(4, 8), torch.randn(4, 15)
    y = fused(x)
    y_ref = torch.cat([p(x) for p in parts], -1)
    assert torch.allclose(y, y_ref, atol=1e-6)
    assert torch.allclose(fused.u, torch.stack([p.u[0] for p in parts]), atol=1e-6)
    (y * g).sum().backward()
    (y_ref * g).sum().backward()
    assert torch.allclose(fused.weight.grad, torch.cat([p.weight.grad for p in parts]), atol=1e-5)
    assert torch.allclose(fused.gamma.grad, torch.cat([p.gamma.grad for p in parts]), atol=1e-5)
    assert torch.allclose(fused.exact_sigma(), torch.cat([p.exact_sigma() for p in parts]))
    with pytest.raises(ValueError, match="blocks"):
        SigmaReparamLinear(8, 10, blocks=3)


def test_gamma_init_number_fixes_the_spectral_norm():
    lin = layer(gamma_init=1.0)
    assert lin.gamma.item() == 1.0
    lin.eval()
    assert svd_sigma(lin.effective_weight()) == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("norm_position", ["pre", "post", "none"])
def test_swapping_a_gpt_keeps_its_function_and_parameters(norm_position):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=30, seq_len=16, n_layer=2, d_model=32, n_head=4, norm="layer",
                          norm_position=norm_position))
    plain = copy.deepcopy(model)
    weights = {n: p for n, p in model.named_parameters()}
    swapped = sigma_reparam_linears(model, blocks={"qkv": 3})
    assert len(swapped) == 2 * 5 + 1   # qkv, proj, w1, w2, w3 per block, and the head
    assert model.blocks[0].attn.qkv.blocks == 3 and model.blocks[0].attn.proj.blocks == 1
    assert all(isinstance(model.get_submodule(n), SigmaReparamLinear) for n in swapped)
    after = dict(model.named_parameters())
    assert all(after[n] is p for n, p in weights.items())   # the same Parameter objects
    assert sum(after[n].numel() for n in after if n.endswith("gamma")) == len(swapped) + 2 * 2
    x = torch.randint(0, 30, (2, 16))
    model.eval(), plain.eval()
    assert torch.allclose(model(x)[0], plain(x)[0], atol=1e-5)
    model.train()
    _, loss = model(x, x)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    assert sigma_reparam_linears(model, skip=("lm_head",)) == []   # already swapped: nothing left
