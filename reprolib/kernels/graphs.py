"""CUDA graphs for launch-bound steps: record a fixed sequence of kernels once, replay it per step.

An optimizer step on a small model launches ~100 short kernels; on an H100 each costs the host
several microseconds to launch, far more than its arithmetic. A CUDA graph replays the whole
sequence with one launch. What a graph needs (PyTorch's "CUDA Graphs" notes): every tensor it
reads or writes keeps its address between replays (inputs are copied into static buffers), no
host synchronisation inside, and python numbers are frozen in at capture, so anything that changes
per step (learning rates, bias corrections) must stay outside or live in device tensors.
"""
from __future__ import annotations

from typing import Callable

import torch


class CapturedCall:
    """fn() run eagerly for `warmup` calls (on a side stream, as capture requires), then captured
    once and replayed. On the CPU, or with enabled=False, it simply calls fn(): the same code path,
    so CPU tests exercise everything except the capture itself."""

    def __init__(self, fn: Callable[[], None], device: torch.device, warmup: int = 2, enabled: bool = True):
        self.fn, self.warmup = fn, warmup
        self.enabled = enabled and device.type == "cuda"
        self.graph: torch.cuda.CUDAGraph | None = None
        self.calls = 0

    def __call__(self) -> None:
        if not self.enabled:
            self.fn()
        elif self.graph is not None:
            self.graph.replay()
        elif self.calls < self.warmup:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.fn()
            torch.cuda.current_stream().wait_stream(side)
        else:
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.fn()  # recorded, not run
            self.graph.replay()
        self.calls += 1
