"""The fast Muon-family step (padded batched Newton-Schulz, CUDA-graph capture, fused AdamW)
against the plain step, which the oracle tests tie to torch.optim.Muon and the papers' equations."""
import importlib

import pytest
import torch

from reprolib.kernels import CapturedCall, newton_schulz, newton_schulz_many
from reprolib.models import GPT, GPTConfig
from reprolib.optim import make_optimizer

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def test_padding_is_exact_in_fp32():
    shapes = [(48, 16), (16, 48), (16, 16), (16, 80), (3, 16, 40), (80, 16), (24, 40)]
    Gs = [torch.randn(s) for s in shapes]
    out = newton_schulz_many(Gs, dtype=torch.float32)
    for G, O in zip(Gs, out):
        assert O.shape == G.shape and O.is_contiguous()
        assert rel(O, newton_schulz(G, dtype=torch.float32)) < 1e-5


def test_padding_within_bf16_tolerance_and_catches_a_wrong_orientation():
    Gs = [torch.randn(32, 96), torch.randn(96, 32), torch.randn(32, 32)]
    ref = [newton_schulz(G.double(), dtype=torch.float64) for G in Gs]
    for G, O, R in zip(Gs, newton_schulz_many(Gs, dtype=torch.bfloat16), ref):
        # bf16 rounding (1-2e-2 either way); padding may change the order of sums, not the accuracy
        assert rel(O, R) < 3e-2 and rel(O, R) < 1.5 * rel(newton_schulz(G, dtype=torch.bfloat16), R) + 5e-3
    # a property that a bug in the un-padding would break: NS5 maps singular values to ~[0.7, 1.2]
    # (a random square matrix's smallest ones may stay lower after five steps)
    for O in newton_schulz_many(Gs, dtype=torch.float32):
        s = torch.linalg.svdvals(O)
        assert s.max() < 1.3 and s.median() > 0.7


def _model(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=32, seq_len=16, n_layer=2, d_model=32, n_head=2))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["muon", "normuon", "auon", "sinkgd"])
def test_fast_step_equals_plain_step(name, device):
    """Same trajectory over 6 steps with a changing lr and weight decay (fp32 Newton-Schulz, so
    only the padded sums' order differs); on CUDA this includes capture and graph replay."""
    models = [_model().to(device) for _ in range(2)]
    opts = [make_optimizer(name, m, lr=0.02, adamw_lr=3e-3, weight_decay=0.1, fast=fast, ns_dtype=torch.float32)
            for m, fast in zip(models, (False, True))]
    gen = torch.Generator().manual_seed(1)
    for step in range(6):
        x = torch.randint(0, 32, (4, 16), generator=gen).to(device)
        for m, o in zip(models, opts):
            for g in o.param_groups:
                g["lr"] = g.setdefault("base", g["lr"]) * (1 - step / 10)  # a schedule: lr outside the graph
            m(x, x)[1].backward()
            o.step()
            o.zero_grad(set_to_none=True)
    for a, b in zip(*(m.parameters() for m in models)):
        assert (a - b).abs().max() < 2e-5, name


def test_fast_step_detects_a_wrong_scale():
    """The comparison above can fail: drop the shape scale from the fast path and it does."""
    models = [_model() for _ in range(2)]
    opts = [make_optimizer("muon", m, lr=0.02, adamw_lr=3e-3, fast=f, ns_dtype=torch.float32, lr_scale=s)
            for m, f, s in zip(models, (False, True), ("original", "none"))]
    x = torch.randint(0, 32, (4, 16))
    for m, o in zip(models, opts):
        m(x, x)[1].backward()
        o.step()
    assert max((a - b).abs().max() for a, b in zip(*(m.parameters() for m in models))) > 1e-3


def test_captured_call_runs_eagerly_on_the_cpu():
    hits = []
    call = CapturedCall(lambda: hits.append(1), torch.device("cpu"))
    for _ in range(4):
        call()
    assert hits == [1] * 4 and call.graph is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_replays_with_new_inputs():
    x, y = torch.zeros(8, device="cuda"), torch.zeros(8, device="cuda")
    call = CapturedCall(lambda: y.copy_(x * 2 + 1), torch.device("cuda"), warmup=1)
    for v in range(4):
        x.fill_(v)
        call()
        assert torch.allclose(y, torch.full_like(y, 2 * v + 1))
    assert call.graph is not None


def test_padding_budget_splits_costly_shapes(monkeypatch):
    """With no padding budget every shape gets its own call; the results are the same (fp32)."""
    Gs = [torch.randn(s) for s in [(16, 16), (16, 64), (64, 16), (16, 40)]]
    calls = []
    ns = importlib.import_module("reprolib.kernels.newton_schulz")
    real = ns.newton_schulz
    monkeypatch.setattr(ns, "newton_schulz", lambda X, **kw: calls.append(tuple(X.shape)) or real(X, **kw))
    one = newton_schulz_many(Gs, dtype=torch.float32)
    n_one = len(calls)
    calls.clear()
    split = newton_schulz_many(Gs, dtype=torch.float32, max_padding_flops=0)
    assert n_one == 1 and sorted(calls) == [(1, 16, 16), (1, 16, 40), (2, 16, 64)]
    for a, b in zip(one, split):
        assert rel(a, b) < 1e-5
