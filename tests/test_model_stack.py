"""reprolib.models.stack (ModelStack) and reprolib.models.features (WithFeatures): R stacked networks compute, and learn, what R separate ones do."""
import copy

import pytest
import torch

from reprolib.models import MLP, ModelStack, SmallCNN, WithFeatures


def nets(kind, R, bias=None):
    out = []
    for r in range(R):
        torch.manual_seed(r)
        m = MLP(12, [16, 8], 3) if kind == "mlp" else SmallCNN(1, 3, widths=(4, 8), hidden=16, image_size=8)
        out.append(WithFeatures(m, classifier_bias=bias))
    return out


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_with_features_returns_the_models_logits_and_penultimate_features(kind):
    torch.manual_seed(0)
    model = MLP(12, [16, 8], 3) if kind == "mlp" else SmallCNN(1, 3, widths=(4, 8), hidden=16, image_size=8)
    x = torch.randn(5, 12) if kind == "mlp" else torch.randn(5, 1, 8, 8)
    ref = model(x)
    penult = model.net[:-1](x) if kind == "mlp" else None
    wrapped = WithFeatures(copy.deepcopy(model))
    logits, feats = wrapped(x)
    assert torch.allclose(logits, ref, atol=1e-6)
    assert feats.shape == (5, 8 if kind == "mlp" else 16)
    assert torch.allclose(wrapped.classifier(feats), ref, atol=1e-6)
    if penult is not None:
        assert torch.allclose(feats, penult)
    free = WithFeatures(copy.deepcopy(model), classifier_bias=False)
    assert free.classifier.bias is None and free.classifier.weight.shape == (3, feats.shape[1])


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_stack_forward_and_one_sgd_step_match_separate_networks(kind):
    R = 3
    sep = nets(kind, R, bias=False)
    stack = ModelStack(copy.deepcopy(sep))
    shape = (12,) if kind == "mlp" else (1, 8, 8)
    x = torch.randn(R, 6, *shape, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 3, (R, 6), generator=torch.Generator().manual_seed(2))
    logits, feats = stack(x)
    for r in range(R):
        lr_, fr = sep[r](x[r])
        assert torch.allclose(logits[r], lr_, atol=1e-6) and torch.allclose(feats[r], fr, atol=1e-6)
    shared_logits, _ = stack(x[0], shared=True)
    assert torch.allclose(shared_logits[2], sep[2](x[0])[0], atol=1e-6)
    # one SGD step on the summed loss = one step per network on its own loss
    ce = lambda z, t: torch.nn.functional.cross_entropy(z, t)
    opt = torch.optim.SGD(stack.parameters(), lr=0.1)
    sum(ce(logits[r], y[r]) for r in range(R)).backward()
    opt.step()
    for r in range(R):
        o = torch.optim.SGD(sep[r].parameters(), lr=0.1)
        ce(sep[r](x[r])[0], y[r]).backward()
        o.step()
        un = stack.unstack(r)
        for (name, p), q in zip(sep[r].named_parameters(), un.parameters()):
            assert torch.allclose(p, q, atol=1e-6), name
        assert torch.allclose(stack.param("classifier.weight")[r], sep[r].classifier.weight, atol=1e-6)


def test_swap_modules_replaces_in_place_and_keeps_the_order():
    """layers.swap_modules: chosen children replaced under the same key; parameters keep their order."""
    from torch import nn as tnn
    from reprolib.layers import is_linear, swap_modules
    net = MLP(6, [5, 4], 3)
    before = [id(p) for p in net.parameters()]

    class Tagged(tnn.Linear):
        pass

    def make(full, child):
        new = Tagged(child.in_features, child.out_features, device="meta")
        new.weight, new.bias = child.weight, child.bias
        return new
    swapped = swap_modules(net, lambda full, m: is_linear(m) and not full.endswith("4"), make)
    assert list(swapped) == ["net.0", "net.2"] and all(isinstance(m, Tagged) for m in swapped.values())
    assert [id(p) for p in net.parameters()] == before
    assert swap_modules(net, lambda full, m: is_linear(m) and not full.endswith("4"), make) == {}   # swapped once
