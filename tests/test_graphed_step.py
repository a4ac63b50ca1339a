"""GraphedStep (reprolib/kernels/graphed_step.py): the captured training step against the plain
eager step. On the CPU the same code path runs eagerly (static buffers, lr tensors, schedule); on a
GPU the captured replay must track the eager run within bf16 rounding."""
import pytest
import torch

from reprolib.kernels import GraphedStep
from reprolib.models import GPT, GPTConfig

CUDA = torch.cuda.is_available()


def gpt(device, seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=64, seq_len=16, n_layer=2, d_model=32, n_head=2)).to(device)


def adamw(model, device, lr=3e-3):
    # capturable=True is CUDA-only; on the CPU a tensor lr needs the single-tensor (for-loop) AdamW
    cuda = torch.device(device).type == "cuda"
    return torch.optim.AdamW(model.parameters(), lr=torch.tensor(lr, device=device), capturable=cuda,
                             foreach=None if cuda else False, weight_decay=0.1)


def batches(device, n, shape=(4, 16)):
    g = torch.Generator().manual_seed(1)
    return [tuple(torch.randint(0, 64, shape, generator=g).to(device) for _ in range(2)) for _ in range(n)]


def loss_fn(model, b):
    return model(*b)[1]


def eager(model, opt, data, lrs, amp, clip=None):
    out = []
    for (b, lr) in zip(data, lrs):
        opt.param_groups[0]["lr"].fill_(lr)
        with torch.autocast(b[0].device.type, dtype=torch.bfloat16, enabled=amp and b[0].is_cuda):
            loss = loss_fn(model, b)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        out.append(loss.item())
    return out


def graphed(model, opt, data, lrs, amp, clip=None):
    step = GraphedStep(model, opt, loss_fn, amp=amp, grad_clip=clip, warmup=2)
    out = []
    for b, lr in zip(data, lrs):
        step.set_lr([lr])
        out.append(step.step(b))
    return [float(x) for x in out], step


@pytest.mark.parametrize("clip", [None, 0.5])
def test_cpu_path_is_the_eager_step(clip):
    data, lrs = batches("cpu", 6), [1e-3, 3e-3, 2e-3, 1e-3, 5e-4, 0.0]   # a schedule, ending at lr 0
    m1, m2 = gpt("cpu"), gpt("cpu")
    ref = eager(m1, adamw(m1, "cpu"), data, lrs, amp=False, clip=clip)
    got, step = graphed(m2, adamw(m2, "cpu"), data, lrs, amp=False, clip=clip)
    assert got == ref and step.graph is None
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p, q)


def test_set_lr_reaches_the_update():
    m = gpt("cpu")
    opt = adamw(m, "cpu")
    step = GraphedStep(m, opt, loss_fn, amp=False)
    before = [p.detach().clone() for p in m.parameters()]
    step.set_lr([0.0])
    step.step(batches("cpu", 1)[0])
    # lr 0: AdamW moves nothing (its decoupled decay is lr * wd too)
    assert all(torch.equal(p, q) for p, q in zip(before, m.parameters()))
    step.set_lr([1e-2])
    step.step(batches("cpu", 1)[0])
    assert any(not torch.equal(p, q) for p, q in zip(before, m.parameters()))


@pytest.mark.skipif(not CUDA, reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("clip", [None, 1.0])
def test_captured_step_tracks_the_eager_step_on_the_gpu(clip):
    data, lrs = batches("cuda", 12), [3e-3 * (1 - i / 12) for i in range(12)]
    m1, m2 = gpt("cuda"), gpt("cuda")
    ref = eager(m1, adamw(m1, "cuda"), data, lrs, amp=True, clip=clip)
    got, step = graphed(m2, adamw(m2, "cuda"), data, lrs, amp=True, clip=clip)
    assert step.graph is not None                      # steps 3-12 were replays
    assert max(abs(a - b) / abs(a) for a, b in zip(got, ref)) < 2e-2
    diffs = [((p - q).norm() / q.norm()).item() for p, q in zip(m2.parameters(), m1.parameters())]
    assert max(diffs) < 2e-2
    with pytest.raises(ValueError, match="one batch shape"):
        step.step(batches("cuda", 1, shape=(2, 16))[0])


@pytest.mark.skipif(not CUDA, reason="the lr check applies to captured steps")
def test_a_float_lr_is_refused_on_the_gpu():
    m = gpt("cuda")
    with pytest.raises(ValueError, match="lr as a tensor"):
        GraphedStep(m, torch.optim.AdamW(m.parameters(), lr=1e-3, capturable=True), loss_fn)
