"""SeeDNorm and DyT against the papers' equations: torch.nn.RMSNorm (SeeDNorm with beta = 0), the
defining formulas written out independently in float64, closed-form gradients, finite differences
(gradcheck), the scale behaviour the SeeDNorm paper derives, and the swaps into the collection's GPT."""
import copy
import math

import pytest
import torch
from torch import nn

from reprolib.layers import DyT, ScaledEmbedding, SeeDNorm, dyt_norms, seednorm_norms
from reprolib.models import GPT, GPTConfig
from reprolib.optim import weight_decay_groups

D = 12


def trained_like(heads=1, seed=0, dtype=torch.float64, beta_std=0.3):
    """A SeeDNorm with non-trivial alpha, beta, gamma (as after training)."""
    g = torch.Generator().manual_seed(seed)
    norm = SeeDNorm(D, heads=heads, eps=1e-6).to(dtype)
    with torch.no_grad():
        norm.alpha.copy_(1 + 0.5 * torch.randn(D, generator=g, dtype=dtype))
        norm.beta.copy_(beta_std * torch.randn(D, generator=g, dtype=dtype))
        norm.gamma.copy_(1 + 0.2 * torch.randn(D, generator=g, dtype=dtype))
    return norm


def seednorm_formula(x, alpha, beta, gamma, eps, heads=1):
    """[tanh(x . beta^T) alpha + gamma] * x / RMS(x), per head, written with plain loops over heads."""
    rms = torch.sqrt((x ** 2).mean(-1, keepdim=True) + eps)
    d = x.shape[-1] // heads
    scale = torch.empty_like(x)
    for h in range(heads):
        sl = slice(h * d, (h + 1) * d)
        s = torch.tanh((x[..., sl] * beta[sl]).sum(-1, keepdim=True))
        scale[..., sl] = s * alpha[sl] + gamma[sl]
    return scale * x / rms


# ---------------------------------------------------------------- SeeDNorm forward
@pytest.mark.parametrize("heads", [1, 3, 4])
def test_beta_zero_is_torch_rmsnorm(heads):
    torch.manual_seed(0)
    ref = nn.RMSNorm(D)
    with torch.no_grad():
        ref.weight.copy_(1 + 0.3 * torch.randn(D))
    norm = SeeDNorm(D, heads=heads)
    with torch.no_grad():
        norm.gamma.copy_(ref.weight)
        norm.alpha.normal_()   # alpha is irrelevant while beta = 0: tanh(0) = 0
    x = 5 * torch.randn(2, 7, D)
    torch.testing.assert_close(norm(x), ref(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("heads", [1, 2, 3, 6])
def test_matches_the_equation(heads):
    norm = trained_like(heads)
    x = torch.randn(3, 5, D, dtype=torch.float64)
    want = seednorm_formula(x, norm.alpha, norm.beta, norm.gamma, 1e-6, heads)
    torch.testing.assert_close(norm(x), want, rtol=1e-12, atol=1e-12)


def test_one_head_is_the_dot_product_over_all_channels():
    norm = trained_like(1)
    x = torch.randn(4, D, dtype=torch.float64)
    torch.testing.assert_close(norm.dynamic_scale(x)[:, 0], torch.tanh(x @ norm.beta))


def test_multi_head_beta_is_local_to_its_head():
    """A beta non-zero only in head 0 changes only head 0's channels (the split form)."""
    norm = SeeDNorm(D, heads=4, eps=1e-6).double()
    with torch.no_grad():
        norm.beta[0] = 2.0
    x = torch.randn(6, D, dtype=torch.float64)
    rms = nn.functional.rms_norm(x, (D,), eps=1e-6)
    diff = (norm(x) - rms).abs()
    assert diff[:, :3].max() > 1e-3 and diff[:, 3:].max() == 0


def test_rejects_a_split_that_does_not_divide():
    with pytest.raises(ValueError, match="heads"):
        SeeDNorm(10, heads=4)


def test_keeps_the_input_dtype_and_computes_in_float32():
    norm = trained_like(2, dtype=torch.float32)
    x = torch.randn(2, 3, D)
    y16 = norm(x.to(torch.bfloat16))
    assert y16.dtype == torch.bfloat16
    torch.testing.assert_close(y16.float(), norm(x.to(torch.bfloat16).float()).to(torch.bfloat16).float())


# ---------------------------------------------------------------- scale behaviour (the paper's analysis)
def test_only_the_dynamic_term_sees_the_input_scale():
    """x -> kx leaves x / RMS(x) (eps = 0) unchanged: SeeDNorm(kx) = [tanh(k x.beta) alpha + gamma] x/RMS(x)."""
    norm = trained_like(1)
    norm.eps = 0.0
    x = torch.randn(5, D, dtype=torch.float64)
    x_hat = x / x.pow(2).mean(-1, keepdim=True).sqrt()
    for k in (0.1, 1.0, 7.0):
        want = (torch.tanh(k * (x @ norm.beta))[:, None] * norm.alpha + norm.gamma) * x_hat
        torch.testing.assert_close(norm(k * x), want, rtol=1e-12, atol=1e-12)
    # beta = 0: exactly scale-invariant, as RMSNorm; beta != 0: not, so the input norm reaches the output
    plain = SeeDNorm(D, eps=0.0).double()
    assert torch.allclose(plain(3 * x), plain(x), atol=1e-12)
    assert (norm(3 * x) - norm(x)).abs().max() > 1e-3


def test_input_gradient_shrinks_as_one_over_the_input_scale():
    """Once tanh saturates, d SeeDNorm / dx at kx is 1/k times that at x: RMSNorm's gradient scaling."""
    norm = trained_like(1)
    x = torch.randn(D, dtype=torch.float64)
    v = torch.randn(D, dtype=torch.float64)

    def grad_norm(k):
        xk = (k * x).requires_grad_(True)
        (norm(xk) * v).sum().backward()
        return xk.grad.norm().item()

    assert grad_norm(2000.0) / grad_norm(200.0) == pytest.approx(0.1, rel=1e-6)
    # at beta = 0 (RMSNorm) the 1/k law holds at every scale
    plain = SeeDNorm(D, eps=0.0).double()
    g = [torch.autograd.functional.vjp(plain, k * x, v)[1].norm().item() for k in (1.0, 4.0)]
    assert g[1] / g[0] == pytest.approx(0.25, rel=1e-9)


# ---------------------------------------------------------------- gradients
@pytest.mark.parametrize("heads", [1, 3])
def test_gradcheck_all_inputs_and_parameters(heads):
    norm = trained_like(heads)
    x = torch.randn(2, 3, D, dtype=torch.float64, requires_grad=True)
    params = (norm.alpha, norm.beta, norm.gamma)

    def f(x, alpha, beta, gamma):
        return seednorm_formula(x, alpha, beta, gamma, 1e-6, heads)

    assert torch.autograd.gradcheck(lambda x, *p: torch.func.functional_call(
        norm, dict(zip(("alpha", "beta", "gamma"), p)), (x,)), (x, *params))
    # and the module's autograd gradients equal those of the independent formula
    out = torch.randn(2, 3, D, dtype=torch.float64)
    g_mod = torch.autograd.grad((norm(x) * out).sum(), (x, *params))
    g_ref = torch.autograd.grad((f(x, *params) * out).sum(), (x, *params))
    for a, b in zip(g_mod, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_parameter_gradients_in_closed_form():
    """dL/dgamma = sum g x_hat;  dL/dalpha = sum g x_hat tanh(s);  dL/dbeta = sum (1 - tanh(s)^2) (g . alpha x_hat) x."""
    norm = trained_like(1)
    x = torch.randn(9, D, dtype=torch.float64)
    g = torch.randn(9, D, dtype=torch.float64)
    (norm(x) * g).sum().backward()
    x_hat = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    t = torch.tanh(x @ norm.beta.detach())[:, None]
    torch.testing.assert_close(norm.gamma.grad, (g * x_hat).sum(0))
    torch.testing.assert_close(norm.alpha.grad, (g * x_hat * t).sum(0))
    torch.testing.assert_close(norm.beta.grad, ((1 - t ** 2) * (g * norm.alpha.detach() * x_hat).sum(-1, keepdim=True) * x).sum(0))


def test_alpha_gets_no_gradient_at_initialisation_but_beta_does():
    """beta = 0: tanh = 0, so alpha's gradient is zero; beta's is not (alpha = 1), and the dynamic term grows from there."""
    norm = SeeDNorm(D).double()
    x = torch.randn(5, D, dtype=torch.float64)
    (norm(x) * torch.randn(5, D, dtype=torch.float64)).sum().backward()
    assert norm.alpha.grad.abs().max() == 0 and norm.beta.grad.abs().max() > 0


# ---------------------------------------------------------------- DyT
def test_dyt_is_gamma_tanh_alpha_x_plus_b():
    torch.manual_seed(0)
    norm = DyT(D, alpha_init=0.7).double()
    with torch.no_grad():
        norm.gamma.normal_()
        norm.b.normal_()
    x = torch.randn(4, D, dtype=torch.float64)
    torch.testing.assert_close(norm(x), norm.gamma * torch.tanh(0.7 * x) + norm.b)
    assert norm.alpha.shape == (1,) and norm.alpha.item() == pytest.approx(0.7)
    assert torch.autograd.gradcheck(lambda x, a: torch.func.functional_call(norm, {"alpha": a}, (x,)),
                                    (x.requires_grad_(True), norm.alpha.detach().clone().requires_grad_(True)))


def test_dyt_without_shift_and_its_fresh_output():
    norm = DyT(D, alpha_init=0.5, shift=False)
    assert norm.b is None and sum(p.numel() for p in norm.parameters()) == D + 1
    x = torch.randn(3, D)
    torch.testing.assert_close(norm(x), torch.tanh(0.5 * x))


def test_scaled_embedding_multiplies_by_sqrt_d():
    emb = ScaledEmbedding(10, 16)
    idx = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(emb(idx), 4.0 * emb.weight[idx])


# ---------------------------------------------------------------- swaps into the GPT
def gpt(**kw):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=11, seq_len=16, n_layer=2, d_model=24, n_head=2, **kw))


def test_seednorm_swap_starts_as_the_rmsnorm_model():
    base = gpt()
    model = copy.deepcopy(base)
    weights = [m.weight for m in model.modules() if isinstance(m, nn.RMSNorm)]
    names = seednorm_norms(model)
    assert sorted(names) == ["blocks.0.norm1", "blocks.0.norm2", "blocks.1.norm1", "blocks.1.norm2", "norm_f"]
    assert not any(isinstance(m, nn.RMSNorm) for m in model.modules())
    assert {id(m.gamma) for m in model.modules() if isinstance(m, SeeDNorm)} == {id(w) for w in weights}
    assert model.n_params() - base.n_params() == 2 * 24 * len(names)
    idx = torch.randint(0, 11, (3, 16))
    torch.testing.assert_close(model(idx)[0], base(idx)[0], rtol=0, atol=1e-6)
    _, loss = model(idx, idx)
    loss.backward()
    assert all(m.beta.grad.abs().max() > 0 for m in model.modules() if isinstance(m, SeeDNorm))


def test_seednorm_swap_skip_and_heads():
    model = gpt()
    names = seednorm_norms(model, heads=4, skip=("norm_f",))
    assert "norm_f" not in names and isinstance(model.norm_f, nn.RMSNorm)
    assert all(m.heads == 4 for m in model.modules() if isinstance(m, SeeDNorm))
    with pytest.raises(ValueError, match="heads"):
        seednorm_norms(gpt(), heads=5)


def test_dyt_swap_follows_the_llama_recipe():
    model = gpt()
    emb = model.tok_emb.weight
    names = dyt_norms(model)
    assert names[-1] == "tok_emb" and isinstance(model.tok_emb, ScaledEmbedding) and model.tok_emb.weight is emb
    assert model.tok_emb.scale.item() == pytest.approx(math.sqrt(24))
    alphas = {n: m.alpha.item() for n, m in model.named_modules() if isinstance(m, DyT)}
    assert alphas == pytest.approx({"blocks.0.norm1": 0.8, "blocks.0.norm2": 0.2, "blocks.1.norm1": 0.8,
                                    "blocks.1.norm2": 0.2, "norm_f": 0.2})
    assert all(m.b is None for m in model.modules() if isinstance(m, DyT))
    idx = torch.randint(0, 11, (2, 16))
    _, loss = model(idx, idx)
    loss.backward()
    assert model.tok_emb.scale.grad is not None and torch.isfinite(loss)


def test_dyt_swap_replaces_layernorm_too():
    model = gpt(norm="layer")
    dyt_norms(model, shift=True, embed_scale=False)
    assert not any(isinstance(m, nn.LayerNorm) for m in model.modules())
    assert type(model.tok_emb) is nn.Embedding
    assert all(m.b is not None for m in model.modules() if isinstance(m, DyT))


def test_weight_decay_groups():
    model = gpt()
    seednorm_norms(model)
    decay, keep = weight_decay_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and keep["weight_decay"] == 0.0
    ids = lambda ps: {id(p) for p in ps}
    seed_norms = [m for m in model.modules() if isinstance(m, SeeDNorm)]
    assert ids(decay["params"]) == ids([p for p in model.parameters() if p.ndim >= 2]
                                       + [m.alpha for m in seed_norms] + [m.beta for m in seed_norms])
    assert ids(keep["params"]) == ids(m.gamma for m in seed_norms)
    assert len(decay["params"]) + len(keep["params"]) == len(list(model.parameters()))
    dyt = gpt()
    dyt_norms(dyt)
    _, keep = weight_decay_groups(dyt, 0.1)
    assert ids(keep["params"]) == ids([m.alpha for m in dyt.modules() if isinstance(m, DyT)]
                                      + [m.gamma for m in dyt.modules() if isinstance(m, DyT)] + [dyt.tok_emb.scale])
