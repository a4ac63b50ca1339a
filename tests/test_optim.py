"""Optimizer tests: one matrix over the registry, plus oracle cross-checks.

Oracles: torch.optim.Muon (identical updates), torch.optim.AdamW (the aux AdamW path), the
official NorMuon equations (github.com/zichongli5/NorMuon, normuon.py; transcribed below) and
pytorch-optimizer's NorMuon. Each oracle test fails if a coefficient or a scale is changed:
test_oracle_catches_a_changed_coefficient proves that for the Muon check.
"""
import math

import pytest
import torch

from reprolib.kernels import newton_schulz
from reprolib.models import GPT, GPTConfig
from reprolib.optim import OPTIMIZERS, Muon, NorMuon, make_optimizer, muon_lr_scale, muon_param_groups

BF16 = torch.bfloat16  # torch.optim.Muon's and the official code's precision
SHAPES = [(48, 32), (32, 48), (40, 40)]


def _run_pair(ours, theirs, params_a, params_b, steps=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for pa, pb in zip(params_a, params_b):
            grad = torch.randn(pa.shape, generator=g)
            pa.grad, pb.grad = grad.clone(), grad.clone()
        ours.step()
        theirs.step()


def _params(seed=0, shapes=SHAPES):
    g = torch.Generator().manual_seed(seed)
    a = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
    return a, [torch.nn.Parameter(p.detach().clone()) for p in a]


@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("lr_scale", ["original", "match_rms_adamw"])
def test_muon_matches_torch_optim_muon(nesterov, lr_scale):
    a, b = _params()
    ours = Muon(a, lr=0.02, weight_decay=0.1, nesterov=nesterov, lr_scale=lr_scale, ns_dtype=BF16)
    theirs = torch.optim.Muon(b, lr=0.02, weight_decay=0.1, nesterov=nesterov, adjust_lr_fn=lr_scale)
    _run_pair(ours, theirs, a, b)
    for pa, pb in zip(a, b):
        torch.testing.assert_close(pa, pb, rtol=0, atol=1e-6)


def test_oracle_catches_a_changed_coefficient():
    a, b = _params()
    ours, theirs = Muon(a, lr=0.02, ns_dtype=BF16), torch.optim.Muon(b, lr=0.02)
    changed = (3.4445, -4.7750, 2.0415)
    for group in ours.param_groups:
        group["ns_coefficients"] = changed
    _run_pair(ours, theirs, a, b, steps=2)
    assert max((pa - pb).abs().max().item() for pa, pb in zip(a, b)) > 1e-4


def test_lr_scale_conventions():
    assert muon_lr_scale((768, 3072), "original") == 1.0
    assert muon_lr_scale((3072, 768), "original") == 2.0
    assert math.isclose(muon_lr_scale((3072, 768), "match_rms_adamw"), 0.2 * math.sqrt(3072))
    with pytest.raises(ValueError, match="valid"):
        muon_lr_scale((2, 2), "moonlight")


def test_aux_adamw_matches_torch_adamw():
    a, b = _params(shapes=[(7,), (5, 3)])
    ours = Muon([dict(params=a, use_muon=False, lr=3e-3, weight_decay=0.01)], betas=(0.9, 0.95), adamw_eps=1e-8)
    theirs = torch.optim.AdamW(b, lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01, foreach=False)
    _run_pair(ours, theirs, a, b)
    for pa, pb in zip(a, b):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7)


def official_normuon_step(p, grad, m, v, lr, beta=0.95, beta2=0.95):
    """The official normuon_update, transcribed (Newton-Schulz from reprolib, tested above)."""
    m.lerp_(grad, 1 - beta)
    u = grad.lerp(m, beta)
    O = newton_schulz(u, dtype=BF16).float()
    vnorm = O.norm()
    v.lerp_((O * O).mean(dim=-1, keepdim=True), 1 - beta2)
    O = O * (1 / (v.sqrt() + 1e-10))
    O = O * (vnorm / (O.norm() + 1e-10))
    O = O * max(1, grad.size(-2) / grad.size(-1)) ** 0.5
    p.add_(O, alpha=-lr)


def test_normuon_matches_official_equations():
    a, b = _params()
    ours = NorMuon(a, lr=0.02, ns_dtype=BF16)
    state = [(torch.zeros_like(p), torch.zeros(p.shape[0], 1)) for p in b]
    g = torch.Generator().manual_seed(1)
    for _ in range(10):
        for pa, pb, (m, v) in zip(a, b, state):
            grad = torch.randn(pa.shape, generator=g)
            pa.grad = grad.clone()
            with torch.no_grad():
                official_normuon_step(pb, grad, m, v, lr=0.02)
        ours.step()
    for pa, pb in zip(a, b):
        torch.testing.assert_close(pa, pb, rtol=0, atol=1e-6)


def test_normuon_rows_are_balanced():
    """The mechanism: after normalisation the update's row norms are near-equal, Muon's are not."""
    torch.manual_seed(0)
    W = torch.nn.Parameter(torch.zeros(64, 128))
    grad = torch.randn(64, 128) * torch.logspace(-2, 0, 64)[:, None]  # rows of very different size
    outs = {}
    for name, cls in (("muon", Muon), ("normuon", NorMuon)):
        p = torch.nn.Parameter(W.detach().clone())
        opt = cls([p], lr=1.0, momentum=0.0, nesterov=False)
        p.grad = grad.clone()
        opt.step()
        rows = p.detach().norm(dim=1)
        outs[name] = (rows.std() / rows.mean()).item()
    assert outs["normuon"] < 0.05 < outs["muon"]


def test_normuon_close_to_pytorch_optimizer():
    po = pytest.importorskip("pytorch_optimizer")
    shapes = [(32, 48), (40, 40)]  # wide or square: the shape scale is 1 in both conventions
    a, b = _params(shapes=shapes)
    ours = NorMuon(a, lr=0.02, ns_dtype=BF16)
    theirs = po.NorMuon([dict(params=b, use_muon=True)], lr=0.02, momentum=0.95, beta2=0.95,
                        weight_decay=0.0, nesterov=True, ns_steps=5, eps=1e-10)
    _run_pair(ours, theirs, a, b, steps=5)
    for pa, pb in zip(a, b):
        rel = ((pa - pb).norm() / pb.norm()).item()
        assert rel < 1e-2, rel  # their Newton-Schulz rounds differently in bf16


def test_newton_schulz_batched_equals_per_matrix():
    G = torch.randn(3, 2, 24, 40)
    out = newton_schulz(G, dtype=BF16)
    assert out.shape == G.shape
    for i in range(3):
        for j in range(2):
            torch.testing.assert_close(out[i, j].float(), newton_schulz(G[i, j], dtype=BF16).float(), atol=2e-2, rtol=0)
    assert newton_schulz(G).dtype == torch.float32  # the CPU default


def test_newton_schulz_singular_values_near_one():
    G = torch.randn(64, 256, dtype=torch.float64)
    s = torch.linalg.svdvals(newton_schulz(G, dtype=torch.float32).double())
    assert 0.6 < s.min() and s.max() < 1.25  # the quintic's documented band, not exactly 1


def _tiny_gpt(mlp="dense"):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=32, seq_len=16, n_layer=2, d_model=32, n_head=2, mlp=mlp))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_trains_a_tiny_gpt(name):
    model = _tiny_gpt("moe")
    lrs = {"adamw": 3e-3, "lion": 3e-3, "stable_spam": 3e-3, "conda": 3e-3, "sinkgd": 3e-3, "auon": 0.05}
    opt = make_optimizer(name, model, lr=lrs.get(name, 0.02), adamw_lr=3e-3)
    x = torch.randint(0, 32, (16, 16))
    y = torch.roll(x, -1, dims=1)
    first = None
    for _ in range(30):
        _, loss = model(x, y)
        (loss + 0.01 * model.aux_loss).backward()
        opt.step()
        opt.zero_grad()
        first = first or loss.item()
    assert loss.item() < 0.7 * first
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_muon_param_groups_split():
    model = _tiny_gpt("moe")
    groups = muon_param_groups(model, lr=0.02, adamw_lr=3e-3)
    hidden = {id(p) for p in groups[0]["params"]}
    named = dict(model.named_parameters())
    assert id(named["tok_emb.weight"]) not in hidden and id(named["lm_head.weight"]) not in hidden
    assert id(named["blocks.0.mlp.router.weight"]) not in hidden
    assert id(named["blocks.0.mlp.w1"]) in hidden and id(named["blocks.0.attn.qkv.weight"]) in hidden
    assert all(p.ndim == 1 for p in groups[1]["params"] if id(p) not in {id(named["tok_emb.weight"]),
               id(named["lm_head.weight"]), id(named["blocks.0.mlp.router.weight"]), id(named["blocks.1.mlp.router.weight"])})


def test_muon_rejects_vectors_and_unknown_names():
    with pytest.raises(ValueError, match="use_muon=False"):
        Muon([torch.nn.Parameter(torch.zeros(3))])
    with pytest.raises(ValueError, match="valid"):
        make_optimizer("sgdx", _tiny_gpt(), lr=0.1)


@pytest.mark.parametrize("cls", [Muon, NorMuon])
def test_batched_same_shape_step_equals_one_matrix_at_a_time(cls):
    """The optimizer stacks same-shape matrices into one Newton-Schulz call; in fp32 that must give
    what each matrix gets alone."""
    shapes = [(24, 16)] * 3 + [(16, 24)] * 2 + [(2, 12, 8)]
    a, _ = _params(shapes=shapes)
    alone = [torch.nn.Parameter(p.detach().clone()) for p in a]
    together = cls(a, lr=0.02, ns_dtype=torch.float32)
    apart = [cls([p], lr=0.02, ns_dtype=torch.float32) for p in alone]
    g = torch.Generator().manual_seed(2)
    for _ in range(5):
        for pa, pb in zip(a, alone):
            pa.grad = torch.randn(pa.shape, generator=g)
            pb.grad = pa.grad.clone()
        together.step()
        for opt in apart:
            opt.step()
    for pa, pb in zip(a, alone):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_step_with_closure_returns_the_loss(name):
    """torch.optim's closure convention: step(closure) evaluates the loss with gradients on."""
    model = _tiny_gpt()
    opt = make_optimizer(name, model, lr=1e-3, adamw_lr=1e-3)
    x = torch.randint(0, 32, (4, 16))

    def closure():
        opt.zero_grad()
        loss = model(x, torch.roll(x, -1, dims=1))[1]
        loss.backward()
        return loss

    before = [p.detach().clone() for p in model.parameters()]
    loss = opt.step(closure)
    assert torch.is_tensor(loss) and loss.requires_grad
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
