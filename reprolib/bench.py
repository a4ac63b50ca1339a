"""Timing of the orthogonalised-update hot path on a CUDA GPU: `make bench`.

Three tables, each measured in one run with CUDA events (median of repeated timings, after
warm-up), on fresh random (never zero) inputs:
  1. Newton-Schulz (5 steps, bf16) per matrix: reprolib's batched call on a stack of same-shape
     matrices vs torch.optim.Muon's one-matrix-at-a-time function, with the matrix-multiply floor
     (the iteration's FLOPs at the bf16 GEMM rate measured in the same run).
  2. One optimizer step on the collection's small GPTs (6 layers width 384, 12 layers width 768):
     AdamW (fused), torch.optim.Muon (+ AdamW for non-matrix parameters), reprolib Muon's plain path
     (per-shape batches, eager) and its default fast path (padded batch, CUDA graph, fused AdamW),
     and NorMuon (fast path), as ratios to AdamW.
  3. One training step (forward, backward, optimizer; bf16 autocast, eager) in tokens per second.
FLOPs of one Newton-Schulz step on X (m x n, m <= n): X X^T 2m^2 n, A A 2m^3, B X 2m^2 n.
"""
import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from .kernels import NS5_COEFFICIENTS, newton_schulz
from .models import GPT, GPTConfig
from .optim import make_optimizer, muon_param_groups
from .run import atomic_write, repo_root
from .run.harness import library_versions

NS_SHAPES = [(768, 768), (768, 3072), (1024, 4096), (4096, 4096)]
GPTS = {"6L-384": dict(n_layer=6, d_model=384, n_head=6), "12L-768": dict(n_layer=12, d_model=768, n_head=12)}


DEVICE = "cuda"  # a CPU dry run of the code paths sets "cpu" (tests/test_bench.py)


def cuda_ms(fn, reps: int = 30, warmup: int = 5, cuda: bool | None = None) -> float:
    """Median milliseconds per call of fn, by CUDA events (cuda=None: on CUDA unless DEVICE is "cpu"
    or there is no GPU); on the CPU the mean wall time."""
    for _ in range(warmup):
        fn()
    if cuda is None:
        cuda = DEVICE != "cpu" and torch.cuda.is_available()
    if not cuda:
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - t) / reps * 1e3
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def gemm_tflops(n: int = 8192) -> float:
    a, b = torch.randn(n, n, device=DEVICE, dtype=torch.bfloat16), torch.randn(n, n, device=DEVICE, dtype=torch.bfloat16)
    return 2 * n ** 3 / cuda_ms(lambda: a @ b, reps=10) / 1e9


def ns_flops(m: int, n: int, steps: int = 5) -> float:
    m, n = min(m, n), max(m, n)
    return steps * (4 * m * m * n + 2 * m ** 3)


def bench_newton_schulz(rate_tflops: float, batch: int = 12) -> list[dict]:
    from torch.optim._muon import _zeropower_via_newtonschulz as torch_ns
    rows = []
    for m, n in NS_SHAPES:
        G = torch.randn(batch, m, n, device=DEVICE)
        ours = cuda_ms(lambda: newton_schulz(G, dtype=torch.bfloat16)) / batch
        theirs = cuda_ms(lambda: [torch_ns(g, NS5_COEFFICIENTS, 5, 1e-7) for g in G]) / batch
        floor = ns_flops(m, n) / (rate_tflops * 1e9)
        rows.append(dict(shape=f"{m}x{n}", batch=batch, reprolib_ms=ours, torch_ms=theirs, floor_ms=floor,
                         speedup=theirs / ours, reprolib_over_floor=ours / floor))
    return rows


def _gpt(size: str, vocab: int = 256, seq_len: int = 256):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=vocab, seq_len=seq_len, **GPTS[size])).to(DEVICE)


def _optimizers(model):
    """name -> list of optimizers that together update every parameter."""
    groups = muon_param_groups(model, lr=0.02, adamw_lr=3e-3)
    return {
        "adamw": [make_optimizer("adamw", model, lr=3e-3)],
        "torch_muon": [torch.optim.Muon(groups[0]["params"], lr=0.02),
                       torch.optim.AdamW(groups[1]["params"], lr=3e-3, betas=(0.9, 0.95), fused=DEVICE == "cuda")],
        "muon_plain": [make_optimizer("muon", model, lr=0.02, adamw_lr=3e-3, fast=False)],
        "muon": [make_optimizer("muon", model, lr=0.02, adamw_lr=3e-3)],
        "normuon": [make_optimizer("normuon", model, lr=0.02, adamw_lr=3e-3)],
    }


def bench_optimizer_step(rate_tflops: float) -> list[dict]:
    """Step times, and the Newton-Schulz arithmetic of all hidden matrices at the GEMM rate: with
    AdamW's time on the other parameters, a floor for any 5-step Muon on that model."""
    rows = []
    for size in GPTS:
        model = _gpt(size)
        ns_floor = sum(ns_flops(*p.shape[-2:]) * p[..., 0, 0].numel() for p in muon_param_groups(model, 0.02, 3e-3)[0]["params"])
        ns_floor_ms = ns_floor / (rate_tflops * 1e9)
        for p in model.parameters():
            p.grad = torch.randn_like(p) * 1e-3
        times = {name: cuda_ms(lambda: [o.step() for o in opts]) for name, opts in _optimizers(model).items()}
        for name, t in times.items():
            rows.append(dict(model=size, optimizer=name, step_ms=t, ratio_to_adamw=t / times["adamw"],
                             ns_floor_ms=ns_floor_ms))
        del model
    return rows


def bench_train_step(batch: int = 16, seq_len: int = 256) -> list[dict]:
    seq_len = min(seq_len, 256)
    rows = []
    for size in GPTS:
        model = _gpt(size, seq_len=seq_len)
        x = torch.randint(0, 256, (batch, seq_len), device=DEVICE)
        for name, opts in _optimizers(model).items():
            def step():
                with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=DEVICE == "cuda"):
                    loss = model(x, x)[1]
                loss.backward()
                for o in opts:
                    o.step()
                    o.zero_grad(set_to_none=True)
            t = cuda_ms(step, reps=20)
            rows.append(dict(model=size, optimizer=name, batch=f"{batch}x{seq_len}", step_ms=t,
                             tokens_per_s=batch * seq_len / t * 1e3))
        del model
    return rows


def markdown(res: dict) -> str:
    out = [f"# Newton-Schulz and optimizer-step timings\n\n{res['device']}; {res['versions']}; bf16 GEMM "
           f"{res['gemm_tflops']:.0f} TFLOP/s (8192^3, this run).\n",
           "## Newton-Schulz per matrix (5 steps, bf16)\n",
           "| shape | batch | reprolib ms | torch.optim.Muon ms | floor ms | speed-up | reprolib / floor |",
           "|---|---|---|---|---|---|---|"]
    out += [f"| {r['shape']} | {r['batch']} | {r['reprolib_ms']:.4f} | {r['torch_ms']:.4f} | {r['floor_ms']:.4f} | "
            f"{r['speedup']:.1f}x | {r['reprolib_over_floor']:.1f}x |" for r in res["newton_schulz"]]
    out += ["\n## Optimizer step\n", "NS floor: the 5-step Newton-Schulz FLOPs of all hidden matrices at the GEMM rate above.\n",
            "| model | optimizer | ms | / AdamW | NS floor ms |", "|---|---|---|---|---|"]
    out += [f"| {r['model']} | {r['optimizer']} | {r['step_ms']:.3f} | {r['ratio_to_adamw']:.2f} | {r['ns_floor_ms']:.3f} |"
            for r in res["optimizer_step"]]
    out += ["\n## Training step (forward, backward, optimizer; bf16 autocast, eager)\n",
            "| model | optimizer | batch | ms | tokens/s |", "|---|---|---|---|---|"]
    out += [f"| {r['model']} | {r['optimizer']} | {r['batch']} | {r['step_ms']:.2f} | {r['tokens_per_s']:,.0f} |"
            for r in res["train_step"]]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Newton-Schulz / optimizer-step benchmark (CUDA)")
    ap.add_argument("--out", help="folder for bench.json and bench.md (default: print only)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("make bench needs a CUDA GPU (torch sees none); the CPU has no bf16 fast path to time.")
        return 2
    torch.backends.cuda.matmul.allow_tf32 = True
    rate = gemm_tflops()
    res = dict(device=torch.cuda.get_device_name(), versions=library_versions(), host=platform.node(),
               gemm_tflops=rate, newton_schulz=bench_newton_schulz(rate), optimizer_step=bench_optimizer_step(rate),
               train_step=bench_train_step())
    text = markdown(res)
    print(text)
    if args.out:
        out = Path(args.out)
        atomic_write(out / "bench.json", (json.dumps(res, indent=1) + "\n").encode())
        atomic_write(out / "bench.md", text.encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
