"""Timing of the training hot paths on a CUDA GPU: `make bench`.

Four tables, each measured in one run with CUDA events (median of repeated timings, after
warm-up), on fresh random (never zero) inputs:
  1. Newton-Schulz (5 steps, bf16) per matrix: reprolib's batched call on a stack of same-shape
     matrices vs torch.optim.Muon's one-matrix-at-a-time function, with the matrix-multiply floor
     (the iteration's FLOPs at the bf16 GEMM rate measured in the same run).
  2. One optimizer step on the collection's small GPTs (6 layers width 384, 12 layers width 768):
     AdamW (fused), torch.optim.Muon (+ AdamW for non-matrix parameters), reprolib Muon's plain path
     (per-shape batches, eager) and its default fast path (padded batch, CUDA graph, fused AdamW),
     and NorMuon (fast path), as ratios to AdamW.
  3. One training step (forward, backward, optimizer; bf16 autocast, eager) in tokens per second.
  4. The training loop itself, AdamW, on the 4L-256, 6L-384 and 12L-768 GPTs at the notebooks'
     batch sizes, in tokens per second and model FLOP utilisation (MFU: the step's model FLOPs at
     the bf16 GEMM rate measured in this run): a plain reference loop written here (the few lines
     any PyTorch user would write), the same step captured whole in a CUDA graph
     (reprolib.kernels.GraphedStep), reprolib.train.train_lm eager and compiled, and three seeds
     trained as one batched model (torch.func: stacked weights, vmap) against three runs one after
     another.
FLOPs of one Newton-Schulz step on X (m x n, m <= n): X X^T 2m^2 n, A A 2m^3, B X 2m^2 n.
Model FLOPs of one training token (fwd + bwd = 3x fwd): 6 N (N: the weights of every matrix product,
the vocabulary head included, the embedding lookup not) + 6 L T d (causal attention scores and
values, half of the T x T products).
"""
import copy
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
# the loop table: the collection's GPT sizes at the batch sizes its notebooks train with (x 256 tokens)
LOOP_GPTS = {"4L-256": (dict(n_layer=4, d_model=256, n_head=4), 32), "6L-384": (dict(n_layer=6, d_model=384, n_head=6), 16),
             "12L-768": (dict(n_layer=12, d_model=768, n_head=12), 16)}
LOOP_STEPS = 60


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


def _gpt(size: str, seq_len: int = 256):
    return _build_gpt(GPTS[size], seq_len)


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


def train_flops_per_token(model: GPT) -> float:
    """6 N + 6 L T d (module docstring): N the weights of every matrix product (embedding excluded)."""
    cfg = model.cfg
    n = sum(p.numel() for name, p in model.named_parameters() if p.ndim >= 2 and "tok_emb" not in name)
    return 6 * n + 6 * cfg.n_layer * cfg.seq_len * cfg.d_model


def _reference_loop(model, tokens, batch: int, seq_len: int, steps: int) -> float:
    """Seconds per step of the plain loop a PyTorch user writes: random windows, bf16 autocast,
    cross-entropy, fused AdamW; no evaluation, no schedule."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=DEVICE == "cuda")
    g = torch.Generator(device=DEVICE).manual_seed(0)

    def step():
        i = torch.randint(0, len(tokens) - seq_len - 1, (batch, 1), device=DEVICE, generator=g)
        w = tokens[i + torch.arange(seq_len + 1, device=DEVICE)]
        with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=DEVICE == "cuda"):
            logits = model(w[:, :-1])[0]
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), w[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return cuda_ms(step, reps=steps, warmup=5) / 1e3


def _library_loop(model, tokens, batch: int, seq_len: int, steps: int, compile: bool) -> float:
    """Seconds per step of reprolib.train.train_lm (its own step timer: evaluations excluded)."""
    from .train import train_lm
    opt = make_optimizer("adamw", model, lr=1e-3)
    hist = train_lm(model, opt, tokens, tokens[: 64 * seq_len], steps=steps, batch_size=batch, seq_len=seq_len,
                    generator=torch.Generator(device=DEVICE).manual_seed(0), eval_every=steps, eval_batches=1,
                    progress=False, compile=compile)
    return hist.step_time_s


def _graphed_loop(model, tokens, batch: int, seq_len: int, steps: int) -> float:
    """Seconds per step of the reference loop's step captured whole in a CUDA graph
    (reprolib.kernels.GraphedStep): the batch is drawn outside the graph and copied in, fused
    capturable AdamW with its lr in a device tensor."""
    from .kernels import GraphedStep
    opt = torch.optim.AdamW(model.parameters(), lr=torch.tensor(1e-3, device=DEVICE), fused=DEVICE == "cuda",
                            capturable=DEVICE == "cuda", foreach=None if DEVICE == "cuda" else False)
    g = torch.Generator(device=DEVICE).manual_seed(0)
    step_of = GraphedStep(model, opt, lambda m, b: torch.nn.functional.cross_entropy(
        m(b[0])[0].float().flatten(0, 1), b[1].flatten()), amp=True)

    def step():
        i = torch.randint(0, len(tokens) - seq_len - 1, (batch, 1), device=DEVICE, generator=g)
        w = tokens[i + torch.arange(seq_len + 1, device=DEVICE)]
        step_of.step((w[:, :-1], w[:, 1:]))
    return cuda_ms(step, reps=steps, warmup=5) / 1e3


def _stacked_loop(models, tokens, batch: int, seq_len: int, steps: int) -> float:
    """Seconds per step of len(models) GPTs trained as one batched model: weights stacked on a leading
    dimension (torch.func.stack_module_state), one vmapped forward and backward, one fused AdamW."""
    from torch.func import functional_call, stack_module_state, vmap
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    opt = torch.optim.AdamW(list(params.values()), lr=1e-3, fused=DEVICE == "cuda")
    S, g = len(models), torch.Generator(device=DEVICE).manual_seed(0)

    def loss_of(p, b, x, y):
        return functional_call(base, (p, b), (x, y))[1]

    def step():
        i = torch.randint(0, len(tokens) - seq_len - 1, (S, batch, 1), device=DEVICE, generator=g)
        w = tokens[i + torch.arange(seq_len + 1, device=DEVICE)]
        with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=DEVICE == "cuda"):
            losses = vmap(loss_of)(params, buffers, w[..., :-1], w[..., 1:])
        losses.sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return cuda_ms(step, reps=steps, warmup=5) / 1e3


def bench_training_loop(rate_tflops: float, steps: int = LOOP_STEPS, seeds: int = 3) -> list[dict]:
    """Table 4 (module docstring). A row per (model, path): ms per step, tokens/s, MFU; the batched
    row's tokens count every seed's, and `speedup` compares it with `seeds` eager runs in a row; the
    CUDA-graph row's `speedup` compares it with the reference loop."""
    rows = []
    tokens = torch.randint(0, 256, (1_000_000 if DEVICE == "cuda" else 20_000,), device=DEVICE)
    for size, (arch, batch) in LOOP_GPTS.items():
        seq_len = min(256, max(16, len(tokens) // 1000))
        flops = train_flops_per_token(_build_gpt(arch, seq_len))
        per_step = batch * seq_len

        def row(path, s, n_tokens, **extra):
            rows.append(dict(model=size, path=path, batch=f"{batch}x{seq_len}", step_ms=s * 1e3,
                             tokens_per_s=n_tokens / s, mfu=n_tokens * flops / s / (rate_tflops * 1e12), **extra))
        ref = _reference_loop(_build_gpt(arch, seq_len), tokens, batch, seq_len, steps)
        row("reference loop", ref, per_step)
        try:   # a capture that fails (a sync inside the step) is a result of the table, not the end of the run
            graphed = _graphed_loop(_build_gpt(arch, seq_len), tokens, batch, seq_len, steps)
            row("reference step, CUDA graph", graphed, per_step, speedup=ref / graphed)
        except RuntimeError as err:
            rows.append(dict(model=size, path="reference step, CUDA graph", batch=f"{batch}x{seq_len}",
                             error=f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"))
        eager = _library_loop(_build_gpt(arch, seq_len), tokens, batch, seq_len, steps, compile=False)
        row("train_lm eager", eager, per_step)
        if DEVICE == "cuda":
            row("train_lm compiled", _library_loop(_build_gpt(arch, seq_len), tokens, batch, seq_len, steps, True), per_step)
        stacked = _stacked_loop([_build_gpt(arch, seq_len, seed=s) for s in range(seeds)], tokens, batch, seq_len, steps)
        row(f"{seeds} seeds batched", stacked, seeds * per_step, speedup=seeds * eager / stacked)
    return rows


def _build_gpt(arch: dict, seq_len: int, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=256, seq_len=seq_len, **arch)).to(DEVICE)


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
    if res.get("training_loop"):
        out += ["\n## Training loop (AdamW; tokens/s and model FLOP utilisation at the GEMM rate above)\n",
                "| model | path | batch | ms/step | tokens/s | MFU | speed-up (graph: vs the reference loop; batched: vs one after another) |",
                "|---|---|---|---|---|---|---|"]
        for r in res["training_loop"]:
            if "error" in r:
                out.append(f"| {r['model']} | {r['path']} | {r['batch']} | failed: {r['error']} | | | |")
                continue
            speedup = f"{r['speedup']:.2f}x" if "speedup" in r else ""
            out.append(f"| {r['model']} | {r['path']} | {r['batch']} | {r['step_ms']:.2f} | {r['tokens_per_s']:,.0f} | "
                       f"{r['mfu']:.1%} | {speedup} |")
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
               train_step=bench_train_step(), training_loop=bench_training_loop(rate))
    text = markdown(res)
    print(text)
    if args.out:
        out = Path(args.out)
        atomic_write(out / "bench.json", (json.dumps(res, indent=1) + "\n").encode())
        atomic_write(out / "bench.md", text.encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
