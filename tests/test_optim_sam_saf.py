"""SAM, SAF and MESA against their oracles.

Oracles: pytorch-optimizer's SAM (same steps, three ways of driving ours); the official SAF and MESA
training steps (SAF_train.py / MESA_train.py, train_one_epoch, github.com/AngusDujw/SAF), transcribed
below with their numpy bank and timm's ModelEmaV2 update order; closed forms (||eps_hat|| = rho, the
trajectory term's gradient tau (q - p) / |B|, the EMA as a weighted sum). Changed constants are shown
to fail the oracles. Pass counting: count_passes on each method's step.
"""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reprolib.metrics import count_passes
from reprolib.optim.sam import SAM, sam_loss, sam_perturbation
from reprolib.optim.saf import MESA, SAF, OutputBank, trajectory_kl

pytorch_optimizer = pytest.importorskip("pytorch_optimizer")


def _net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))


def _batches(n=6, b=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(b, 6, generator=g), torch.randint(0, 4, (b,), generator=g)) for _ in range(n)]


def _maxdiff(a, b):
    return max((x - y).abs().max().item() for x, y in zip(a.parameters(), b.parameters()))


CE = lambda model, batch: F.cross_entropy(model(batch[0]), batch[1])
BASE = dict(lr=0.1, momentum=0.9, weight_decay=5e-4)


def _oracle_run(rho, batches):
    net = _net()
    opt = pytorch_optimizer.SAM(net.parameters(), torch.optim.SGD, rho=rho, foreach=False, **BASE)
    for x, y in batches:
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            return loss

        opt.step(closure)
    return net


@pytest.mark.parametrize("drive", ["two_step", "closure", "sam_loss"])
def test_sam_matches_pytorch_optimizer(drive):
    batches = _batches()
    oracle = _oracle_run(0.05, batches)
    net = _net()
    opt = SAM(net.parameters(), torch.optim.SGD, rho=0.05, **BASE)
    for x, y in batches:
        if drive == "two_step":
            F.cross_entropy(net(x), y).backward()
            opt.first_step(zero_grad=True)
            F.cross_entropy(net(x), y).backward()
            opt.second_step(zero_grad=True)
        elif drive == "closure":
            F.cross_entropy(net(x), y).backward()
            opt.step(lambda: F.cross_entropy(net(x), y).backward())
            opt.zero_grad()
        else:   # as reprolib.train.train drives it
            sam_loss(CE, opt)(net, (x, y)).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    assert _maxdiff(net, oracle) < 1e-6
    assert _maxdiff(net, _net()) > 1e-2           # it did train
    assert _maxdiff(_oracle_run(0.1, batches), oracle) > 1e-4   # a different rho fails the oracle


def test_sam_with_rho_zero_is_the_base_optimizer():
    batches = _batches()
    net, ref = _net(), _net()
    opt = SAM(net.parameters(), torch.optim.SGD, rho=0.0, **BASE)
    ref_opt = torch.optim.SGD(ref.parameters(), **BASE)
    for batch in batches:
        sam_loss(CE, opt)(net, batch).backward()
        opt.step()
        opt.zero_grad()
        CE(ref, batch).backward()
        ref_opt.step()
        ref_opt.zero_grad()
    assert _maxdiff(net, ref) == 0.0


def test_sam_perturbation_has_norm_rho_along_the_gradient():
    g = [torch.randn(3, 4), torch.randn(5)]
    e = sam_perturbation(g, rho=0.3)
    flat_g, flat_e = torch.cat([t.flatten() for t in g]), torch.cat([t.flatten() for t in e])
    assert flat_e.norm().item() == pytest.approx(0.3, rel=1e-6)
    assert torch.allclose(flat_e, 0.3 * flat_g / flat_g.norm(), atol=1e-7)


def test_sam_loss_is_the_loss_at_the_perturbed_weights_and_step_restores():
    net = _net()
    batch = _batches(1)[0]
    opt = SAM(net.parameters(), torch.optim.SGD, rho=0.05, lr=0.0)    # lr 0: the step only restores w
    w = [p.detach().clone() for p in net.parameters()]
    CE(net, batch).backward()
    e = sam_perturbation([p.grad for p in net.parameters()], 0.05)
    net.zero_grad()
    perturbed = _net()
    with torch.no_grad():
        for p, wi, ei in zip(perturbed.parameters(), w, e):
            p.copy_(wi + ei)
    loss = sam_loss(CE, opt)(net, batch)
    assert loss.item() == pytest.approx(CE(perturbed, batch).item(), rel=1e-6)
    assert loss.item() > CE(_net(), batch).item()          # the ascent step raised the loss
    loss.backward()
    opt.step()
    assert all(torch.equal(p, wi) for p, wi in zip(net.parameters(), w))
    with pytest.raises(RuntimeError):
        opt.step()                                          # no first_step and no closure


# ---------------------------------------------------------------- SAF's trajectory term

def official_kl(output, past, T):
    """SAF_train.py / MESA_train.py: KL_loss before `* args.reinforce` (softmax's dim made explicit)."""
    return (F.kl_div(F.softmax(output / T, dim=-1).log(), F.softmax(past / T, dim=-1), reduction="none")
            .sum(-1).mean() * (T ** 2))


@pytest.mark.parametrize("tau", [1.0, 5.0])
def test_trajectory_kl_matches_the_official_line_and_its_closed_form_gradient(tau):
    g = torch.Generator().manual_seed(3)
    z = (torch.randn(32, 10, generator=g, dtype=torch.float64) * 3).requires_grad_()
    past = torch.randn(32, 10, generator=g, dtype=torch.float64) * 3
    ours = trajectory_kl(z.float(), past.float(), tau)
    zo = z.detach().clone().requires_grad_()
    official = official_kl(zo, past, tau)
    assert ours.item() == pytest.approx(official.item(), rel=1e-5)
    (grad,) = torch.autograd.grad(trajectory_kl(z, past, tau), z)
    (grad_off,) = torch.autograd.grad(official, zo)
    closed = tau * (F.softmax(z / tau, -1) - F.softmax(past / tau, -1)) / len(z)   # d/dz tau^2 KL(p || q(z))
    assert torch.allclose(grad, grad_off, atol=1e-6) and torch.allclose(grad.double(), closed.detach(), atol=1e-6)
    assert trajectory_kl(past, past, tau).item() == pytest.approx(0.0, abs=1e-6)
    assert abs(trajectory_kl(z, past, 2 * tau).item() - official.item()) > 1e-3     # tau matters


def test_trajectory_kl_keeps_float64_and_lifts_bf16():
    """float64 logits stay float64 (an exact check against the official line near the end of training,
    where the term is ~1e-4 and float32 rounding alone is ~1e-4 relative); bf16 is computed in float32."""
    g = torch.Generator().manual_seed(0)
    z, past = torch.randn(64, 10, generator=g, dtype=torch.float64), torch.randn(64, 10, generator=g, dtype=torch.float64)
    near = z + 1e-3 * past                                   # a tiny term, like late training
    ours, official = trajectory_kl(near, z, 5.0), official_kl(near, z, 5.0)
    assert ours.dtype == torch.float64 and ours.item() == pytest.approx(official.item(), rel=1e-9)
    assert trajectory_kl(z.bfloat16(), past.bfloat16(), 5.0).dtype == torch.float32


def test_bank_returns_the_logits_recorded_lag_epochs_earlier():
    n, lag = 20, 2
    bank = OutputBank(n, 3, lag=lag)
    gen = torch.Generator().manual_seed(0)
    for epoch in range(7):
        perm = torch.randperm(n, generator=gen)
        for idx in perm.split(6):
            if epoch >= lag:
                past = bank.past(idx, epoch)
                assert torch.equal(past[:, 0], (epoch - lag) * 1000.0 + idx.float())
                assert torch.all(bank.age(idx, epoch) == lag)
            bank.record(idx, torch.stack([epoch * 1000.0 + idx.float()] * 3, 1), epoch)
    # a sample left out of an epoch (a dropped last batch) is seen as stale
    bank.record(torch.arange(n - 1), torch.zeros(n - 1, 3), 7)
    assert bank.age(torch.tensor([n - 1]), 9).item() == 9 - 4    # its slot still holds epoch 4
    with pytest.raises(ValueError):
        OutputBank(n, 3, lag=0)


def _official_saf_losses(batches_per_epoch, epochs, lam, T, kl_start_epoch, minus_epoch, n, n_classes):
    """SAF_train.py's train_one_epoch, transcribed (no amp, no ema; plain CE; SGD step)."""
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train_logits = np.zeros((n, 4, n_classes), dtype=np.float32)
    losses = []
    for epoch in range(epochs):
        for indices, x, y in batches_per_epoch[epoch]:
            indices = indices.cpu().numpy()
            output = model(x)
            train_logits[indices, epoch % (minus_epoch + 1)] = output.detach().cpu().numpy()
            loss = F.cross_entropy(output, y)
            if epoch > kl_start_epoch:
                gpu_train_logits = torch.tensor(train_logits[indices, (epoch - minus_epoch) % (minus_epoch + 1)])
                loss += official_kl(output, gpu_train_logits, T) * lam
            losses.append(loss.item())
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model, losses


def _epochs_of_batches(n, epochs, b=8, seed=2):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 6, generator=g), torch.randint(0, 4, (n,), generator=g)
    return [[(i, x[i], y[i]) for i in torch.randperm(n, generator=g).split(b)] for _ in range(epochs)]


def _our_saf_losses(data, epochs, lam, T, start, lag, n):
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    saf = SAF(n, 4, lam=lam, tau=T, start_epoch=start, lag=lag)
    losses = []
    for epoch in range(epochs):
        for idx, x, y in data[epoch]:
            logits = model(x)
            loss = F.cross_entropy(logits, y) + saf.loss(logits, idx, epoch)
            losses.append(loss.item())
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model, losses, saf


@pytest.mark.parametrize("lam,start,lag", [(0.3, 1, 2), (0.8, 2, 3)])
def test_saf_matches_the_official_training_step(lam, start, lag):
    n, epochs, T = 32, 6, 5.0
    data = _epochs_of_batches(n, epochs)
    oracle, official_losses = _official_saf_losses(data, epochs, lam, T, start, lag, n, 4)
    model, losses, saf = _our_saf_losses(data, epochs, lam, T, start, lag, n)
    np.testing.assert_allclose(losses, official_losses, rtol=1e-5, atol=1e-6)
    assert _maxdiff(model, oracle) < 1e-5
    assert torch.all(saf.bank.age(torch.arange(n), epochs - 1) == lag)
    # the term is off through epoch `start` and on from its first step after (`epoch > kl_start_epoch`)
    _, plain, _ = _our_saf_losses(data, epochs, 0.0, T, start, lag, n)
    on = (start + 1) * len(data[0])
    assert losses[:on] == plain[:on] and losses[on] != pytest.approx(plain[on], rel=1e-4)
    # a different lag fails the oracle (whose bank has 4 slots: lag <= 3)
    _, other = _official_saf_losses(data, epochs, lam, T, start, lag - 1, n, 4)
    assert not np.allclose(losses, other, rtol=1e-4)
    with pytest.raises(ValueError):
        SAF(n, 4, start_epoch=0, lag=2)       # no reference exists at epoch 1


def test_saf_term_is_off_until_after_start_epoch():
    n = 10
    saf = SAF(n, 3, lam=0.5, tau=2.0, start_epoch=1, lag=1)
    z0, z1 = torch.zeros(n, 3), torch.randn(n, 3)
    idx = torch.arange(n)
    assert saf.loss(z0, idx, 0).item() == 0.0 and saf.loss(z1, idx, 1).item() == 0.0
    z2 = torch.randn(n, 3)
    assert saf.loss(z2, idx, 2).item() == pytest.approx(0.5 * trajectory_kl(z2, z1, 2.0).item(), rel=1e-6)
    assert torch.equal(saf.bank.past(idx, 3), z2)


# ---------------------------------------------------------------- MESA

class ModelEmaV2:
    """timm.utils.ModelEmaV2 (the version vendored by the official code), transcribed."""

    def __init__(self, model, decay=0.9998):
        self.module = copy.deepcopy(model)
        self.module.eval()
        self.decay = decay

    @torch.no_grad()
    def update(self, model):
        for ema_v, model_v in zip(self.module.state_dict().values(), model.state_dict().values()):
            ema_v.copy_(self.decay * ema_v + (1.0 - self.decay) * model_v)


def test_mesa_matches_the_official_training_step():
    data = _epochs_of_batches(24, 5)
    lam, T, start, decay = 0.8, 5.0, 1, 0.9
    ref_model = _net()
    ref_opt = torch.optim.SGD(ref_model.parameters(), lr=0.1, momentum=0.9)
    model_ema = ModelEmaV2(ref_model, decay)
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    mesa = MESA(model, lam=lam, tau=T, start_epoch=start, decay=decay)
    for epoch, batches in enumerate(data):
        for _, x, y in batches:
            with torch.no_grad():                      # MESA_train.py: EMA output, then the model's
                ema_output = model_ema.module(x)
            output = ref_model(x)
            loss_ref = F.cross_entropy(output, y)
            if epoch > start:
                loss_ref = loss_ref + official_kl(output, ema_output, T) * lam
            ref_opt.zero_grad()
            loss_ref.backward()
            ref_opt.step()
            model_ema.update(ref_model)

            logits = model(x)
            loss = F.cross_entropy(logits, y) + mesa.loss(model, logits, x, epoch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            assert loss.item() == pytest.approx(loss_ref.item(), rel=1e-5)
    assert _maxdiff(model, ref_model) < 1e-5
    mesa.update(model)     # ours updates as the next step starts: one update behind timm's at the end
    assert _maxdiff(mesa.ema, model_ema.module) < 1e-6


def test_mesa_ema_is_the_weighted_sum_of_the_trajectory():
    model = _net()
    mesa = MESA(model, decay=0.7)
    thetas = [torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()]
    for k in range(4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * (k + 1))
        thetas.append(torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone())
        mesa.update(model)
    d = 0.7   # v_4 = d^4 theta_0 + sum_{t=1..4} (1 - d) d^(4 - t) theta_t
    expected = d ** 4 * thetas[0] + sum((1 - d) * d ** (4 - t) * thetas[t] for t in range(1, 5))
    assert torch.allclose(torch.nn.utils.parameters_to_vector(mesa.ema.parameters()), expected, atol=1e-6)
    assert not any(p.requires_grad for p in mesa.ema.parameters()) and not mesa.ema.training


# ---------------------------------------------------------------- cost in passes

def test_passes_per_step():
    x, y = _batches(1)[0]
    idx = torch.arange(len(x))

    def counted(method):
        model = _net()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        modules = {"model": model}
        if method == "sgd":
            def step():
                CE(model, (x, y)).backward()
                opt.step()
        elif method == "sam":
            opt = SAM(model.parameters(), torch.optim.SGD, lr=0.1)

            def step():
                sam_loss(CE, opt)(model, (x, y)).backward()
                opt.step()
        elif method == "saf":
            saf = SAF(len(x), 4, start_epoch=1, lag=2)
            for e in range(3):
                saf.loss(model(x).detach(), idx, e)

            def step():
                z = model(x)
                (F.cross_entropy(z, y) + saf.loss(z, idx, 3)).backward()
                opt.step()
        else:
            mesa = MESA(model, start_epoch=1)
            modules["ema"] = mesa.ema

            def step():
                z = model(x)
                (F.cross_entropy(z, y) + mesa.loss(model, z, x, 3)).backward()
                opt.step()
        return count_passes(modules, step)

    assert counted("sgd") == {"model": {"forward": 1, "backward": 1}}
    assert counted("saf") == {"model": {"forward": 1, "backward": 1}}
    assert counted("sam") == {"model": {"forward": 2, "backward": 2}}
    assert counted("mesa") == {"model": {"forward": 1, "backward": 1}, "ema": {"forward": 1, "backward": 0}}
