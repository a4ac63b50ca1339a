"""answer_forward (reprolib/models/gpt_prefix.py): the shared-prefix, answer-only forward pass of GPT.

Oracle: GPT.forward itself on the whole sequences, with the answer-token loss (targets -100 elsewhere) and
the model's own load-balancing loss. In float64 the two computations agree to rounding; in float32 the
logits and the loss agree and the gradients agree to float32 rounding."""
import pytest
import torch
import torch.nn.functional as F

from reprolib import data
from reprolib.models import GPT, GPTConfig
from reprolib.models.gpt_prefix import answer_forward

OPS = ["x+y", "x-y", "x*y", "x2+y2"]


def both(cfg, dtype, batch=64, aux_coef=0.01, seed=0):
    task = data.modular_arithmetic(11, OPS, 0.5, seed=seed)
    prefixes, prefix_of = torch.unique(task.x[:, :2], dim=0, return_inverse=True)
    torch.manual_seed(seed)
    model = GPT(cfg(task.vocab_size)).to(dtype)
    i = task.train[torch.randint(len(task.train), (batch,))]
    x, y = task.x[i], task.y[i]
    targets = torch.full_like(x, -100)
    targets[:, -1] = y

    logits, loss = model(x, targets)
    ref = loss + aux_coef * model.aux_loss
    ref.backward()
    g_ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()

    last, aux = answer_forward(model, prefixes, prefix_of[i], x[:, 2:])
    padded = torch.cat([last.new_zeros(batch, 3, last.size(-1)), last[:, None]], 1)
    got = F.cross_entropy(padded.float().flatten(0, 1), targets.flatten()) + aux_coef * aux
    got.backward()
    g = [p.grad.clone() for p in model.parameters()]
    return dict(logits=(last, logits[:, -1]), aux=(aux, model.aux_loss), loss=(got, ref), grads=(g, g_ref))


@pytest.mark.parametrize("mlp,norm_position,attn", [("moe", "pre", "mha"), ("dense", "pre", "mha"),
                                                    ("moe", "none", "mha"), ("moe", "pre", "mla")])
def test_answer_forward_equals_gpt_forward(mlp, norm_position, attn):
    cfg = lambda v: GPTConfig(vocab_size=v, seq_len=4, n_layer=3, d_model=32, n_head=4, mlp=mlp, n_experts=4,
                              top_k=2, norm_position=norm_position, attn=attn, rope_dim=4)
    r = both(cfg, torch.float64)
    torch.testing.assert_close(*r["logits"], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.as_tensor(r["aux"][0]), torch.as_tensor(r["aux"][1]), rtol=1e-12, atol=1e-12)
    for a, b in zip(*r["grads"]):   # the loss itself is float32 (GPT.forward casts the logits)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-9)
    r = both(cfg, torch.float32)
    torch.testing.assert_close(*r["logits"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(*r["loss"], rtol=1e-6, atol=1e-6)
    for a, b in zip(*r["grads"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_answer_forward_rejects_post_norm():
    task = data.modular_arithmetic(5, OPS[:1], 0.5)
    prefixes, prefix_of = torch.unique(task.x[:, :2], dim=0, return_inverse=True)
    model = GPT(GPTConfig(vocab_size=task.vocab_size, seq_len=4, n_layer=1, d_model=16, n_head=4,
                          norm_position="post"))
    with pytest.raises(ValueError, match="norm_position"):
        answer_forward(model, prefixes, prefix_of, task.x[:, 2:])
