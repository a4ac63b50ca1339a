"""Kernel timing and transient memory for comparisons of implementations on one GPU.

interleaved_ms: every implementation is timed in turn, sample by sample (a, b, c, a, b, c, ...), so
a change of clock or a neighbour's load touches all of them alike; each sample brackets `inner`
back-to-back calls with CUDA events (one event pair per call would time the events as much as a
50-microsecond kernel) and reports milliseconds per call. Off CUDA the same loop reads the wall clock.

peak_transient_bytes: the peak of allocated CUDA memory while fn runs, above what was allocated
before it (inputs and weights excluded; its outputs, while alive, included).
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch


def interleaved_ms(fns: dict[str, Callable[[], object]], samples: int = 50, warmup: int = 10, inner: int = 10,
                   cuda: bool | None = None) -> dict[str, list[float]]:
    """{name: [ms per call, one per sample]} with the implementations timed in alternation, after
    `warmup` calls of each (Triton and torch.compile compile on their first calls)."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    if cuda:
        torch.cuda.synchronize()
    out = {name: [] for name in fns}
    for _ in range(samples):
        for name, fn in fns.items():
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(inner):
                    fn()
                end.record()
                torch.cuda.synchronize()
                out[name].append(start.elapsed_time(end) / inner)
            else:
                t = time.perf_counter()
                for _ in range(inner):
                    fn()
                out[name].append((time.perf_counter() - t) * 1e3 / inner)
    return out


def timing_spread(samples) -> float:
    """(90% quantile - 10% quantile) / median of one implementation's samples: how much the timings
    scatter, robust to a stray sample (a CUDA-event s.d. is dominated by its single worst sample)."""
    q10, q50, q90 = np.quantile(np.asarray(samples, dtype=np.float64), [0.1, 0.5, 0.9])
    return float((q90 - q10) / q50)


def peak_transient_bytes(fn: Callable[[], object], device: torch.device) -> float:
    """Peak CUDA memory allocated while fn() runs, above the memory allocated before it; nan off CUDA."""
    if device.type != "cuda":
        fn()
        return float("nan")
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    result = fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    del result
    return float(peak)
