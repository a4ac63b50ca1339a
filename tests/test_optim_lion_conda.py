"""Lion and Conda: oracle cross-checks, proofs that the oracle tests have teeth, and the defining
property of each update.

Oracles: lucidrains' lion-pytorch (the official google/automl update, same op order) and
pytorch-optimizer's Conda. pytorch-optimizer refreshes Conda's basis at steps 1, T, 2T, ... (it
counts from 1); the official code at 1, 1+T, 1+2T, ... (it counts from 0). The `po_conda` fixture
shifts its projector's step by one so that it follows the official code; without the shift the
runs differ (test_conda_oracle_catches_a_change proves it).
"""
import pytest
import torch

from reprolib.optim.conda import Conda
from reprolib.optim.lion import Lion

SHAPES = [(48, 32), (32, 48), (40, 40), (17,)]  # tall, wide, square, vector


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny matrices: OpenMP threads cost more than they give (100x more on 2 shared cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _params(shapes=SHAPES, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
    return a, [torch.nn.Parameter(p.detach().clone()) for p in a]


def _run_pair(ours, theirs, params_a, params_b, steps=10, seed=1):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for pa, pb in zip(params_a, params_b):
            grad = torch.randn(pa.shape, generator=g)
            pa.grad, pb.grad = grad.to(pa.device, copy=True), grad.to(pb.device, copy=True)
        ours.step()
        theirs.step()
    return max((pa.detach().cpu() - pb.detach().cpu()).abs().max().item() for pa, pb in zip(params_a, params_b))


# ---------------------------------------------------------------- Lion

def test_lion_matches_lion_pytorch():
    lion_pytorch = pytest.importorskip("lion_pytorch")
    a, b = _params(SHAPES + [(3, 5, 7), ()])
    ours = Lion([dict(params=a[:3]), dict(params=a[3:], lr=3e-4, weight_decay=0.0)], lr=1e-3, weight_decay=1.0)
    theirs = lion_pytorch.Lion([dict(params=b[:3]), dict(params=b[3:], lr=3e-4, weight_decay=0.0)],
                               lr=1e-3, weight_decay=1.0)
    assert _run_pair(ours, theirs, a, b) <= 1e-7


def test_lion_oracle_catches_a_changed_beta():
    lion_pytorch = pytest.importorskip("lion_pytorch")
    a, b = _params()
    ours, theirs = Lion(a, lr=1e-3, betas=(0.8, 0.99)), lion_pytorch.Lion(b, lr=1e-3, betas=(0.9, 0.99))
    assert _run_pair(ours, theirs, a, b) > 1e-4  # a flipped sign moves a coordinate by 2 lr


def test_lion_every_coordinate_moves_by_exactly_lr():
    """The sign property: with wd = 0 each coordinate moves by +-lr, whatever the gradient's size.
    lr = 2^-8 from zero keeps every iterate exact in float32."""
    lr = 2.0 ** -8
    p = torch.nn.Parameter(torch.zeros(64, 32))
    frozen = torch.nn.Parameter(torch.ones(5))  # p.grad None: no step, no state
    opt = Lion([p, frozen], lr=lr)
    g = torch.Generator().manual_seed(0)
    for step in range(5):
        p.grad = torch.randn(p.shape, generator=g) * torch.logspace(-6, 3, 32)  # scales over 9 decades
        before = p.detach().clone()
        opt.step()
        assert torch.equal((p.detach() - before).abs(), torch.full_like(before, lr))
        if step == 0:  # m = 0: c = (1 - b1) g
            assert torch.equal(p.detach(), -lr * p.grad.sign())
    assert torch.equal(frozen.detach(), torch.ones(5)) and frozen not in opt.state


# ---------------------------------------------------------------- Conda

@pytest.fixture
def po_conda(monkeypatch):
    """pytorch_optimizer.Conda on the official refresh schedule (see the module docstring)."""
    po = pytest.importorskip("pytorch_optimizer")
    from pytorch_optimizer.optimizer import conda as po_module

    original = po_module.GaLoreProjector

    class OfficialSchedule(original):
        def project(self, grad, num_steps, *args, **kwargs):
            return super().project(grad, num_steps - 1, *args, **kwargs)

    def make(params, shift=True, **kw):
        monkeypatch.setattr(po_module, "GaLoreProjector", OfficialSchedule if shift else original)
        return po.Conda(params, **CONDA, **kw)
    return make


CONDA = dict(lr=0.01, betas=(0.9, 0.99), weight_decay=0.1, scale=0.25)


@pytest.mark.parametrize("gap", [1, 3, 1000])  # 3: refreshes at steps 1, 4, 7, 10 of the 12
def test_conda_matches_pytorch_optimizer(po_conda, gap):
    a, b = _params()
    ours, theirs = Conda(a, update_proj_gap=gap, **CONDA), po_conda(b, update_proj_gap=gap)
    assert _run_pair(ours, theirs, a, b, steps=12) <= 1e-6  # same ops in the same order: 0.0 here


@pytest.mark.parametrize("change", [dict(scale=0.3), dict(eps=1e-6), "refresh one step later"])
def test_conda_oracle_catches_a_change(po_conda, change):
    a, b = _params()
    shift = change != "refresh one step later"
    ours = Conda(a, update_proj_gap=3, **{**CONDA, **(change if shift else {})})
    assert _run_pair(ours, po_conda(b, shift=shift, update_proj_gap=3), a, b, steps=12) > 1e-5


@pytest.mark.parametrize("shape", [(48, 32), (32, 48), (40, 40)])
def test_conda_is_adam_in_the_momentums_singular_basis(shape):
    """Until the next refresh, Conda on W is Adam on X = W V (tall or square W) or X = U^T W (wide),
    with U S V^T the SVD of the first momentum (1 - b1) G_1, i.e. of G_1, built here independently.
    With eps = 0 the eps conventions agree, so torch.optim.Adam (lr * scale) on X is the oracle.
    Plain Adam on W itself (a use_conda=False group) is far from it."""
    lr, scale, steps = 0.01, 0.5, 6
    g = torch.Generator().manual_seed(3)
    grads = [torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(steps)]
    W0 = torch.randn(shape, generator=g)
    U, _, Vh = torch.linalg.svd(grads[0], full_matrices=False)
    if shape[0] >= shape[1]:
        rotate, rotate_back = (lambda A: A @ Vh.T), (lambda X: X @ Vh)
    else:
        rotate, rotate_back = (lambda A: U.T @ A), (lambda X: U @ X)
    W, W_adam = torch.nn.Parameter(W0.clone()), torch.nn.Parameter(W0.clone())
    X = torch.nn.Parameter(rotate(W0.double()))
    conda = Conda([dict(params=[W]), dict(params=[W_adam], use_conda=False, lr=lr * scale)], lr=lr,
                  betas=(0.9, 0.99), eps=0.0, scale=scale, update_proj_gap=steps)  # no refresh after step 1
    adam = torch.optim.Adam([X], lr=lr * scale, betas=(0.9, 0.99), eps=0.0)
    for G in grads:
        W.grad, W_adam.grad, X.grad = G.float(), G.float(), rotate(G)
        conda.step()
        adam.step()
    # Conda takes the SVD in float32: 2.7e-6 on one LAPACK build (Python 3.12, torch 2.11), < 1e-6 on another
    torch.testing.assert_close(W.detach().double(), rotate_back(X.detach()), rtol=0, atol=1e-5)
    assert (W - W_adam).abs().max() > 0.1 * lr * scale  # 5e-4: fifty times the tolerance


def test_conda_groups_grad_none_and_stacked_matrices(po_conda):
    """A (2, m, n) tensor is two matrices, each with its own basis; a use_conda=False matrix gets
    the official code's elementwise Adam (= pytorch-optimizer's vector path on it flattened);
    a parameter without a gradient is skipped."""
    stacked, adam_matrix = _params([(2, 24, 16), (6, 5)])[0]
    halves = [torch.nn.Parameter(stacked.detach()[i].clone()) for i in range(2)]
    flat = torch.nn.Parameter(adam_matrix.detach().flatten().clone())
    frozen = torch.nn.Parameter(torch.ones(3))
    ours = Conda([dict(params=[stacked, frozen], update_proj_gap=2),
                  dict(params=[adam_matrix], use_conda=False)], **CONDA)
    theirs = po_conda(halves + [flat], update_proj_gap=2)
    g = torch.Generator().manual_seed(4)
    for _ in range(5):
        stacked.grad, adam_matrix.grad = torch.randn(2, 24, 16, generator=g), torch.randn(6, 5, generator=g)
        for i in range(2):
            halves[i].grad = stacked.grad[i].clone()
        flat.grad = adam_matrix.grad.flatten().clone()
        ours.step()
        theirs.step()
    torch.testing.assert_close(stacked.detach(), torch.stack([h.detach() for h in halves]), rtol=0, atol=1e-6)
    torch.testing.assert_close(adam_matrix.detach().flatten(), flat.detach(), rtol=0, atol=1e-7)
    assert torch.equal(frozen.detach(), torch.ones(3)) and frozen not in ours.state


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("cls,kw,tol", [
    (Lion, dict(lr=1e-3, weight_decay=1.0), 2.5e-3),  # a c within rounding of 0 may flip: 2 lr
    (Conda, dict(update_proj_gap=3, **CONDA), 1e-4),  # the update is invariant to SVD sign choices
])
def test_cuda_matches_cpu(cls, kw, tol):
    a, _ = _params()
    b = [torch.nn.Parameter(p.detach().cuda()) for p in a]
    assert _run_pair(cls(a, **kw), cls(b, **kw), a, b, steps=5) < tol
