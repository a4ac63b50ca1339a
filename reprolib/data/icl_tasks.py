"""In-context classification tasks made from one image dataset by random projections of the inputs and
random permutations of the labels, with any number of distinct tasks (General-Purpose In-Context Learning).

Kirsch, Harrison, Sohl-Dickstein & Metz, "General-Purpose In-Context Learning by Meta-Learning
Transformers" (2022), https://arxiv.org/abs/2212.04458, Section 3 (task augmentation):

    task tau = (A, pi):   x' = A x,   A_ij ~ N(0, 1 / N_x)   (A is N_x x N_x),   y' = pi(y)
    a sequence of one task: inputs [A x_i ; onehot(pi(y_{i-1}))] (the previous label fed back, zeros at
    i = 0), target pi(y_i) at every position i: the model must learn task tau from the sequence itself.

A finite number of tasks |T| means task ids 0 .. |T| - 1, so that the pools are nested (the 16 tasks
of |T| = 2^4 are among the 2^8 of |T| = 2^8); |T| = infinity draws ids from a range of 2^30 - 2^24 ids,
so a task is (almost) never seen twice; tasks held out for evaluation have ids from 2^30 on and are never
trained on. A task's (A, pi) is a pure function of its id (a counter-based hash), drawn on the device for
a whole batch at once, so no table of 2^16 matrices is stored.
"""
from __future__ import annotations

import math
import warnings

import torch

INFINITE_LOW, INFINITE_HIGH = 2 ** 24, 2 ** 30   # |T| = infinity: ids drawn from [2^24, 2^30)
UNSEEN_BASE = 2 ** 30                            # held-out tasks: ids UNSEEN_BASE + j, never trained on
_M32 = 0xFFFFFFFF


def hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (Wellons' lowbias32) of int64 values in [0, 2^32), elementwise; int64 out."""
    x = x & _M32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def counter_uniform(task_ids: torch.Tensor, n: int, stream: int) -> torch.Tensor:
    """n uniforms in (0, 1) per task id, a pure function of (id, index, stream): [*ids.shape, n], float64."""
    ids = task_ids.to(torch.int64)[..., None]
    idx = torch.arange(n, device=ids.device, dtype=torch.int64)
    h = hash32(hash32(hash32(ids ^ (stream * 0x9E3779B1)) + idx) ^ (ids >> 32))
    return (h.double() + 0.5) / 2.0 ** 32


def projection_uniforms(task_ids: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The two counter streams (1 and 2) that task_projection's Box-Muller reads: [*ids.shape, n] each."""
    return counter_uniform(task_ids, n, 1), counter_uniform(task_ids, n, 2)


_FUSED: dict = {}   # "fn": the compiled projection_uniforms; (device, shape, n): whether it passed its check


def fused_projection_uniforms(task_ids: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """projection_uniforms through torch.compile: the two streams' ~50 elementwise int64 operations on
    [*ids.shape, n] (each a full read and write of the tensor in eager mode) become one kernel that writes
    the two streams once. Only integer operations and an exact scaling by 2^-32 are compiled, so the values
    are the eager ones bit for bit. That is checked on the first call of each (device, shape, n); a failed
    check or a failed compilation falls back to the eager operations, with a warning."""
    key = (task_ids.device, tuple(task_ids.shape), n)
    if key not in _FUSED:
        try:
            fn = _FUSED.setdefault("fn", torch.compile(projection_uniforms, dynamic=False, fullgraph=True))
            ok = all(torch.equal(a, b) for a, b in zip(fn(task_ids, n), projection_uniforms(task_ids, n)))
            why = "the compiled uniforms differ from the eager ones"
        except Exception as err:   # no compiler backend on this machine, for instance
            ok, why = False, f"{type(err).__name__}: {err}"
        _FUSED[key] = ok
        if not ok:
            warnings.warn(f"fused_projection_uniforms: {why}; using the eager operations", stacklevel=2)
    return (_FUSED["fn"] if _FUSED[key] else projection_uniforms)(task_ids, n)


def task_projection(task_ids: torch.Tensor, dim: int, dtype=torch.float32, fused: bool = False) -> torch.Tensor:
    """A [*ids.shape, dim, dim] with A_ij ~ N(0, 1 / dim) (Box-Muller on two counter streams).
    fused=True draws the streams through fused_projection_uniforms (the same values, faster on a GPU)."""
    u1, u2 = (fused_projection_uniforms if fused else projection_uniforms)(task_ids, dim * dim)
    z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)
    return (z / math.sqrt(dim)).to(dtype).reshape(*task_ids.shape, dim, dim)


def task_permutation(task_ids: torch.Tensor, n_classes: int) -> torch.Tensor:
    """pi [*ids.shape, n_classes]: a uniformly random permutation of the labels per task (argsort of
    counter uniforms); pi[c] is class c's label in the task."""
    return counter_uniform(task_ids, n_classes, 3).argsort(-1)


def sample_task_ids(n_tasks: int | None, batch: int, generator: torch.Generator, device=None) -> torch.Tensor:
    """Training task ids for one batch: uniform over 0 .. n_tasks - 1, or, for n_tasks=None (infinitely
    many tasks), over [INFINITE_LOW, INFINITE_HIGH)."""
    low, high = (0, n_tasks) if n_tasks is not None else (INFINITE_LOW, INFINITE_HIGH)
    if high <= low:
        raise ValueError(f"n_tasks must be >= 1 or None, got {n_tasks}")
    return torch.randint(low, high, (batch,), generator=generator, device=device)


def unseen_task_ids(batch: int, offset: int = 0, device=None) -> torch.Tensor:
    """Held-out task ids UNSEEN_BASE + offset + j: no training pool contains them."""
    return UNSEEN_BASE + offset + torch.arange(batch, device=device)


def task_sequences(x: torch.Tensor, y: torch.Tensor, task_ids: torch.Tensor, seq_len: int,
                   generator: torch.Generator | None = None, n_classes: int = 10, fused: bool = False):
    """One sequence per task id of seq_len examples drawn uniformly (with replacement) from (x [N, dim],
    y [N]). Returns inputs [B, L, dim + n_classes] = [A x_i ; onehot(pi(y_{i-1}))] and targets
    [B, L] = pi(y_i). fused: task_projection's option (the same values)."""
    B, dim = len(task_ids), x.shape[1]
    idx = torch.randint(0, len(x), (B, seq_len), generator=generator, device=x.device)
    A = task_projection(task_ids.to(x.device), dim, x.dtype, fused)                # [B, dim, dim]
    xs = torch.bmm(x[idx], A.transpose(1, 2))                                       # A x_i
    targets = task_permutation(task_ids.to(x.device), n_classes).gather(1, y[idx])  # pi(y_i)
    prev = torch.nn.functional.one_hot(targets, n_classes).to(x.dtype).roll(1, dims=1)
    prev[:, 0] = 0                                                                  # no label before the first
    return torch.cat([xs, prev], -1), targets


def pooled_images(images: torch.Tensor, side: int) -> torch.Tensor:
    """Images [N, H, W] (any dtype) resized to side x side (area average, or bilinear when enlarging),
    flattened and standardised by the set's own pixel mean and std: [N, side^2], float32."""
    x = images.float().unsqueeze(1)
    mode = "area" if side <= x.shape[-1] else "bilinear"
    x = torch.nn.functional.interpolate(x, size=(side, side), mode=mode, **({} if mode == "area" else {"align_corners": False}))
    x = x.flatten(1)
    return (x - x.mean()) / x.std()
