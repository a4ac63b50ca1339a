"""Metrics-Weighted Averaging (MWA) of the adapter checkpoints saved along one fine-tuning run.

"Parameter-Efficient Checkpoint Merging via Metrics-Weighted Averaging", Shi Jie Yu and Sehyun Choi
(2025), https://arxiv.org/abs/2504.18580 (no official code released).

Checkpoints i = 1..n of one LoRA run, each with a metric m_i where larger means "more valuable":
  loss-weighted  m_i = 1 / L_i   (L_i the training loss at checkpoint i)
  step-weighted  m_i = t_i       (t_i the training step of checkpoint i)
The single penalty factor p >= 0 sets how sharply the weights favour the best checkpoint:
  w_i = m_i^p / sum_j m_j^p                           (p = 0: the uniform average)
and the merged adapter is the parameter average of every adapter tensor,
  A = sum_i w_i A_i,   B = sum_i w_i B_i.
The abstract fixes the ingredients (metric, one penalty factor, parameter averaging); the exact
power form above is our reading, not verified against code (none is released).
"""
import math

import torch


def mwa_metric(kind: str, losses=None, steps=None) -> list[float]:
    """The per-checkpoint value m_i: 1 / L_i for kind "loss", t_i for kind "step"."""
    if kind == "loss":
        return [1.0 / float(x) for x in losses]
    if kind == "step":
        return [float(t) for t in steps]
    raise ValueError(f"kind {kind!r}; valid: loss, step")


def mwa_weights(metric, p: float) -> list[float]:
    """w_i = m_i^p / sum_j m_j^p, computed as a softmax of p log m_i (no overflow at large p)."""
    if p < 0:
        raise ValueError(f"penalty factor p={p} must be >= 0")
    m = torch.tensor([float(x) for x in metric], dtype=torch.float64)
    if len(m) == 0 or bool((m <= 0).any()):
        raise ValueError("metric values must be positive and non-empty")
    return torch.softmax(p * torch.log(m), dim=0).tolist()


def weighted_average(states: list[dict[str, torch.Tensor]], weights) -> dict[str, torch.Tensor]:
    """sum_i w_i state_i, key by key (the parameter merge of the checkpoints)."""
    if len(states) != len(weights) or not states:
        raise ValueError(f"{len(states)} states and {len(weights)} weights")
    if not math.isclose(sum(weights), 1.0, rel_tol=0, abs_tol=1e-6):
        raise ValueError(f"weights sum to {sum(weights)}, not 1")
    return {k: sum(float(w) * s[k].double() for w, s in zip(weights, states)).to(states[0][k].dtype)
            for k in states[0]}


def adapter_state(adapters: dict) -> dict[str, torch.Tensor]:
    """A detached copy of the trained tensors of LoRA layers {name: LoRALinear}: name.A and name.B."""
    return {f"{n}.{t}": getattr(a, t).detach().clone() for n, a in adapters.items() for t in ("A", "B")}


def load_adapter_state(adapters: dict, state: dict[str, torch.Tensor]) -> None:
    """Write a state from adapter_state (or a merge of several) back into the layers, in place."""
    with torch.no_grad():
        for n, a in adapters.items():
            a.A.copy_(state[f"{n}.A"])
            a.B.copy_(state[f"{n}.B"])
