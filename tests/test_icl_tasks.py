"""In-context tasks (random projections, label permutations) against their distributions and the
sequence layout; the vector-input GPT against GPT's own loss and causality; the 1-NN learning curve
against sklearn's KNeighborsClassifier."""
import math

import pytest
import torch

from reprolib.data import icl_tasks
from reprolib.data.icl_tasks import (INFINITE_HIGH, INFINITE_LOW, UNSEEN_BASE, counter_uniform, hash32,
                                     pooled_images, projection_uniforms, sample_task_ids, task_permutation,
                                     task_projection, task_sequences, unseen_task_ids)
from reprolib.metrics.icl import accuracy_by_position, nearest_neighbour_by_position
from reprolib.models.gpt import GPTConfig
from reprolib.models.sequence_input import vector_input_gpt


def test_hash_matches_a_plain_python_reference():
    def ref(x):   # Wellons' lowbias32 in unbounded Python integers
        x &= 0xFFFFFFFF
        x ^= x >> 16
        x = (x * 0x7FEB352D) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x846CA68B) & 0xFFFFFFFF
        return x ^ (x >> 16)
    xs = [0, 1, 2, 12345, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 987654321]
    assert hash32(torch.tensor(xs)).tolist() == [ref(v) for v in xs]


def test_uniforms_are_uniform_and_pure_functions_of_the_id():
    ids = torch.arange(4000)
    u = counter_uniform(ids, 50, stream=1)
    assert torch.equal(u, counter_uniform(ids, 50, stream=1))
    assert (u > 0).all() and (u < 1).all()
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    hist = torch.histc(u.float(), bins=10, min=0, max=1) / u.numel()
    assert (hist - 0.1).abs().max() < 0.005
    other = counter_uniform(ids, 50, stream=2)
    assert abs(torch.corrcoef(torch.stack([u.flatten(), other.flatten()]))[0, 1]) < 0.01
    lag = torch.corrcoef(torch.stack([u[:, :-1].flatten(), u[:, 1:].flatten()]))[0, 1]
    assert abs(lag) < 0.01


def test_projections_have_entries_of_variance_one_over_d():
    d = 49
    A = task_projection(torch.arange(300), d, torch.float64)
    assert A.shape == (300, d, d)
    z = A.flatten() * math.sqrt(d)
    assert abs(z.mean()) < 0.01 and abs(z.var() - 1) < 0.01
    normal = torch.distributions.Normal(0.0, 1.0)
    for q in (0.01, 0.1, 0.5, 0.9, 0.99):
        assert abs(torch.quantile(z[:200_000], q) - normal.icdf(torch.tensor(q))) < 0.03
    assert not torch.equal(A[0], A[1])
    assert torch.equal(task_projection(torch.tensor([7]), d, torch.float64)[0], A[7])
    # a projected unit-norm input keeps its norm on average (E ||A x||^2 = ||x||^2)
    x = torch.nn.functional.normalize(torch.randn(d, dtype=torch.float64), dim=0)
    assert abs((A @ x).pow(2).sum(-1).mean() - 1) < 0.05


def test_fused_uniforms_fall_back_to_the_eager_ones(monkeypatch):
    ids = torch.tensor([3, 5, UNSEEN_BASE, INFINITE_HIGH - 1])
    eager = projection_uniforms(ids, 49)
    assert torch.equal(eager[0], counter_uniform(ids, 49, 1)) and torch.equal(eager[1], counter_uniform(ids, 49, 2))
    wrong = lambda fn, **kw: (lambda t, n: tuple(u + 1e-12 for u in fn(t, n)))   # a "compiled" fn that is off
    def broken(fn, **kw):
        raise RuntimeError("no compiler")
    for fake in (wrong, broken):
        monkeypatch.setattr(icl_tasks, "_FUSED", {})
        monkeypatch.setattr(icl_tasks.torch, "compile", fake)
        with pytest.warns(UserWarning, match="using the eager operations"):
            got = icl_tasks.fused_projection_uniforms(ids, 49)
        assert all(torch.equal(a, b) for a, b in zip(got, eager))
        again = icl_tasks.fused_projection_uniforms(ids, 49)   # checked once; still the eager values
        assert all(torch.equal(a, b) for a, b in zip(again, eager))
        assert torch.equal(task_projection(ids, 7, fused=True), task_projection(ids, 7))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the fused path is for GPUs")
def test_fused_uniforms_equal_the_eager_ones_on_a_gpu(monkeypatch):
    monkeypatch.setattr(icl_tasks, "_FUSED", {})
    gen = torch.Generator(device="cuda").manual_seed(0)
    ids = torch.cat([sample_task_ids(None, 64, gen, device="cuda"), sample_task_ids(16, 60, gen, device="cuda"),
                     torch.tensor([0, 2 ** 31, 2 ** 32 - 1, 2 ** 33 + 7], device="cuda")])
    fused = icl_tasks.fused_projection_uniforms(ids, 196 * 196)
    assert icl_tasks._FUSED[(ids.device, tuple(ids.shape), 196 * 196)], "the compiled uniforms failed their check"
    assert all(torch.equal(a, b) for a, b in zip(fused, projection_uniforms(ids, 196 * 196)))


def test_permutations_are_uniform_bijections():
    pi = task_permutation(torch.arange(20_000), 10)
    assert (pi.sort(-1).values == torch.arange(10)).all()
    counts = torch.stack([(pi[:, 0] == c).sum() for c in range(10)]).float() / 20_000
    assert (counts - 0.1).abs().max() < 0.01


def test_task_ids_ranges():
    gen = torch.Generator().manual_seed(0)
    few = sample_task_ids(16, 5000, gen)
    assert few.min() >= 0 and few.max() < 16 and len(few.unique()) == 16
    many = sample_task_ids(None, 5000, gen)
    assert many.min() >= INFINITE_LOW and many.max() < INFINITE_HIGH <= UNSEEN_BASE
    assert unseen_task_ids(4, offset=10).tolist() == [UNSEEN_BASE + 10 + j for j in range(4)]
    with pytest.raises(ValueError):
        sample_task_ids(0, 4, gen)


def test_sequence_layout():
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(300, 12), torch.randint(0, 10, (300,))
    ids = torch.tensor([3, 5, UNSEEN_BASE])
    inputs, targets = task_sequences(x, y, ids, 20, generator=torch.Generator().manual_seed(2))
    assert inputs.shape == (3, 20, 22) and targets.shape == (3, 20)
    idx = torch.randint(0, 300, (3, 20), generator=torch.Generator().manual_seed(2))   # the same draw
    A, pi = task_projection(ids, 12), task_permutation(ids, 10)
    for b in range(3):
        assert torch.allclose(inputs[b, :, :12], x[idx[b]] @ A[b].T, atol=1e-5)
        assert torch.equal(targets[b], pi[b][y[idx[b]]])
        assert (inputs[b, 0, 12:] == 0).all()
        assert torch.equal(inputs[b, 1:, 12:].argmax(-1), targets[b, :-1])
        assert torch.equal(inputs[b, 1:, 12:].sum(-1), torch.ones(19))


def test_pooled_images():
    imgs = torch.randint(0, 256, (10, 28, 28), dtype=torch.uint8)
    x = pooled_images(imgs, 14)
    assert x.shape == (10, 196) and abs(x.mean()) < 1e-5 and abs(x.std() - 1) < 1e-5
    ref = imgs.float().reshape(10, 14, 2, 14, 2).mean((2, 4)).flatten(1)
    assert torch.allclose(x, (ref - ref.mean()) / ref.std(), atol=1e-5)
    assert pooled_images(torch.rand(5, 8, 8), 14).shape == (5, 196)


def test_vector_input_gpt_loss_and_causality():
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=10, seq_len=16, n_layer=2, d_model=32, n_head=4)
    model = vector_input_gpt(cfg, 22)
    assert isinstance(model.tok_emb, torch.nn.Linear) and model.tok_emb.in_features == 22
    x, t = torch.randn(3, 16, 22), torch.randint(0, 10, (3, 16))
    logits, loss = model(x, t)
    assert logits.shape == (3, 16, 10)
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(logits.flatten(0, 1), t.flatten()))
    x2 = x.clone()
    x2[:, 10:] = torch.randn(3, 6, 22)
    assert torch.allclose(model(x2)[0][:, :10], logits[:, :10], atol=1e-5)
    assert not torch.allclose(model(x2)[0][:, 10:], logits[:, 10:])
    loss.backward()
    assert model.tok_emb.weight.grad is not None


def test_accuracy_by_position():
    logits = torch.zeros(2, 3, 4)
    logits[0, :, 1] = 1
    logits[1, :, 2] = 1
    targets = torch.tensor([[1, 0, 1], [2, 2, 0]])
    assert accuracy_by_position(logits, targets).tolist() == [1.0, 0.5, 0.5]


def test_nearest_neighbour_against_sklearn():
    neighbors = pytest.importorskip("sklearn.neighbors")
    gen = torch.Generator().manual_seed(3)
    x, t = torch.randn(5, 30, 6, generator=gen, dtype=torch.float64), torch.randint(0, 4, (5, 30), generator=gen)
    ours = nearest_neighbour_by_position(x, t)
    ref = torch.zeros(30, dtype=torch.float64)
    for b in range(5):
        ref[0] += float(t[b, 0] == 0)
        for i in range(1, 30):
            knn = neighbors.KNeighborsClassifier(1).fit(x[b, :i].numpy(), t[b, :i].numpy())
            ref[i] += float(knn.predict(x[b, i:i + 1].numpy())[0] == t[b, i])
    assert torch.allclose(ours.double(), ref / 5)


def test_digits_images_equal_sklearn():
    datasets = pytest.importorskip("sklearn.datasets")
    from reprolib.data.images import digits_images
    x, y = digits_images()
    ref = datasets.load_digits()
    assert x.shape == (1797, 8, 8) and x.dtype == torch.float32
    assert torch.equal(y, torch.from_numpy(ref.target).long())
    assert torch.allclose(x, torch.from_numpy(ref.images / 16.0).float())
