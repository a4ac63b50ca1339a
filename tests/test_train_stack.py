"""train_stack (reprolib/train.py): a stack of R models trained side by side is R runs of `train`."""
import copy

import pytest
import torch

from reprolib.models import MLP, ModelStack
from reprolib.train import stacked_cross_entropy, train, train_stack

R, D, C, B, STEPS = 3, 12, 4, 16, 25


def data():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(R, STEPS, B, D, generator=g)
    y = torch.randint(C, (R, STEPS, B), generator=g)
    xv, yv = torch.randn(64, D, generator=g), torch.randint(C, (64,), generator=g)
    return x, y, xv, yv


def members():
    torch.manual_seed(0)
    return [MLP(D, [32], C) for _ in range(R)]


@pytest.mark.parametrize("opt", [lambda ps, lr: torch.optim.Adam(ps, lr=lr),
                                 lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.9),
                                 lambda ps, lr: torch.optim.AdamW(ps, lr=lr, weight_decay=0.1)],
                         ids=["adam", "sgd_momentum", "adamw"])
def test_each_member_is_the_run_train_would_make(opt):
    x, y, xv, yv = data()
    lrs = [3e-3, 1e-2, 3e-2]
    alone = []
    for r, m in enumerate(members()):
        h = train(m, opt(m.parameters(), lrs[r]), lambda s, r=r: (x[r, s], y[r, s]),
                  lambda net, b: torch.nn.functional.cross_entropy(net(b[0]), b[1]), STEPS,
                  lambda net: torch.nn.functional.cross_entropy(net(xv), yv).item(), eval_every=10,
                  warmup=5, progress=False)
        alone.append((m, h))
    stack = ModelStack(members())
    hists = train_stack(stack, opt(stack.parameters(), 1.0), lambda s: (x[:, s], y[:, s]),
                        lambda st, b: stacked_cross_entropy(st(b[0]), b[1]), STEPS, lrs,
                        evaluate=lambda st: stacked_cross_entropy(st(xv, shared=True), yv), eval_every=10, warmup=5)
    for (m, h), hs, ms in zip(alone, hists, stack.unstack()):
        assert hs.steps == h.steps == [0, 10, 20, 25]
        torch.testing.assert_close(torch.tensor(hs.val_loss), torch.tensor(h.val_loss), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(torch.tensor(hs.train_loss[1:]), torch.tensor(h.train_loss[1:]), rtol=1e-5, atol=1e-6)
        for a, b in zip(ms.parameters(), m.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_member_that_stops_keeps_its_weights_and_the_rest_train_on():
    x, y, xv, yv = data()
    stack = ModelStack(members())
    calls = []

    def stop(values):          # member 1 stops at the first evaluation after step 0
        calls.append(values)
        return torch.tensor([False, len(calls) == 2, False])

    snapshots = {}

    def evaluate(st):
        snapshots[len(snapshots)] = [p.detach().clone() for p in st.unstack(1).parameters()]
        return stacked_cross_entropy(st(xv, shared=True), yv)

    hists = train_stack(stack, torch.optim.Adam(stack.parameters(), lr=1.0), lambda s: (x[:, s], y[:, s]),
                        lambda st, b: stacked_cross_entropy(st(b[0]), b[1]), STEPS, [1e-2] * R,
                        evaluate=evaluate, eval_every=10, stop=stop)
    assert hists[1].steps == [0, 10] and hists[0].steps == hists[2].steps == [0, 10, 20, 25]
    for a, b in zip(stack.unstack(1).parameters(), snapshots[1]):
        assert torch.equal(a, b)             # member 1 has not moved since it stopped
    assert not all(torch.equal(a, b) for a, b in zip(stack.unstack(0).parameters(), snapshots[1]))


def test_a_member_whose_value_is_not_finite_stops_and_all_stopped_ends_the_loop():
    x, y, xv, yv = data()
    stack = ModelStack(members())
    seen = []

    def evaluate(st):
        seen.append(1)
        return torch.tensor([float("nan"), float("inf"), 1.0])

    hists = train_stack(stack, torch.optim.SGD(stack.parameters(), lr=1.0), lambda s: (x[:, s], y[:, s]),
                        lambda st, b: stacked_cross_entropy(st(b[0]), b[1]), STEPS, [1e-2] * R,
                        evaluate=evaluate, eval_every=5, stop=lambda v: v < 2)
    assert [h.steps for h in hists] == [[0], [0], [0]] and len(seen) == 1


def test_select_fills_each_members_select_loss():
    x, y, xv, yv = data()
    stack = ModelStack(members())
    hists = train_stack(stack, torch.optim.Adam(stack.parameters(), lr=1.0), lambda s: (x[:, s], y[:, s]),
                        lambda st, b: stacked_cross_entropy(st(b[0]), b[1]), 3, [1e-3] * R,
                        select=lambda st: torch.arange(R, dtype=torch.float32))
    assert [h.select_loss for h in hists] == [0.0, 1.0, 2.0] and all(h.steps == [] for h in hists)
