"""One readable training loop, a language-model wrapper around it, the same loop for a stack of models
trained side by side (seeds or grid points as one vmapped model), and a multi-seed runner.
(Tuning lives in the harness: `Run.tune`.)

    hist = train_lm(model, opt, corpus.train, corpus.val, steps=1000, batch_size=32, seq_len=256,
                    generator=run.seed(0), eval_every=100)
    hist.val_loss[-1], hist.tokens, steps_to_target(hist.tokens, hist.val_loss, target)

The loop is step-based: a learning-rate schedule (linear warm-up, then cosine, linear or constant)
multiplies every param group's base lr; evaluation runs on a schedule; a `probe` can look at the
exact parameter change of chosen steps (theta_{t+1} - theta_t), which the curvature and
update-geometry notebooks measure. On CUDA the forward and backward run under bf16 autocast
(weights, optimizer state and the loss stay fp32); `compile=True` wraps the model in
torch.compile. The training loss is accumulated on the device so no step waits for the host.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from .data import lm_batch, lm_eval_batches

SCHEDULES = ("cosine", "linear", "constant")


def lr_multiplier(step: int, total: int, warmup: int = 0, kind: str = "cosine", final: float = 0.0) -> float:
    """lr(step) / base lr: linear warm-up over `warmup` steps, then decay to `final` at `total`."""
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule {kind!r}; valid: {SCHEDULES}")
    if step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if kind == "cosine" else 1 - progress
    return final + (1 - final) * shape


@dataclass
class History:
    steps: list = field(default_factory=list)       # optimizer steps done at each evaluation
    tokens: list = field(default_factory=list)      # examples (tokens for LMs) seen at each evaluation
    val_loss: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)  # mean training loss since the previous evaluation
    time_s: list = field(default_factory=list)      # wall-clock seconds at each evaluation
    probes: list = field(default_factory=list)      # dicts returned by the probe, with their step
    select_loss: float | None = None                 # final loss on the selection split (run.tune's score)
    step_time_s: float = float("nan")                # mean wall seconds per step, evals and probes excluded

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def autocast(device: torch.device, amp: bool):
    enabled = amp and device.type == "cuda"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, next_batch: Callable[[int], tuple],
          loss_fn: Callable, steps: int, evaluate: Callable[[torch.nn.Module], float], eval_every: int,
          warmup: int = 0, schedule: str = "cosine", final_lr: float = 0.0, examples_per_step: int = 1,
          amp: bool = True, grad_clip: float | None = None, probe: Callable | None = None,
          probe_every: int | None = None, progress: bool = True, desc: str = "", compile: bool = False,
          select: Callable[[torch.nn.Module], float] | None = None) -> History:
    """Train for `steps` optimizer steps; evaluate at step 0, every `eval_every` steps and at the end.

    loss_fn(model, batch) -> scalar loss to minimise; evaluate(model) -> float (e.g. val loss);
    probe(step, model, before, batch) -> dict, called after the steps divisible by probe_every,
    with `before` the parameters (list, model.parameters() order) before that step.
    compile=True trains and evaluates through torch.compile(model); the probe gets the plain model
    (compiled graphs have no double backward, which Hessian-vector products need).
    select(model) -> float is evaluated once, after the last step, into hist.select_loss: the
    held-out score `Run.tune` chooses hyperparameters on (never the reported split).
    """
    if steps < 1 or eval_every < 1:
        raise ValueError(f"steps={steps} and eval_every={eval_every} must be >= 1")
    device = next(model.parameters()).device
    net = model
    if compile:
        torch._dynamo.config.cache_size_limit = max(64, torch._dynamo.config.cache_size_limit)
        net = torch.compile(model)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    params = list(model.parameters())
    hist, running, n_running = History(), torch.zeros((), device=device), 0
    t0 = time.perf_counter()
    overhead = 0.0  # seconds spent in evaluations and probes
    mark = None     # (time, overhead) after the first steps, which carry compilation and warm-up
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=steps, desc=desc, leave=False, mininterval=5, file=sys.stderr)

    def log(step):
        nonlocal overhead
        t = time.perf_counter()
        model.eval()
        with torch.no_grad(), autocast(device, amp):
            val = float(evaluate(net))
        model.train()
        hist.steps.append(step)
        hist.tokens.append(step * examples_per_step)
        hist.val_loss.append(val)
        hist.train_loss.append(float(running) / n_running if n_running else float("nan"))
        hist.time_s.append(time.perf_counter() - t0)
        overhead += time.perf_counter() - t

    model.train()
    log(0)
    for step in range(steps):
        mult = lr_multiplier(step, steps, warmup, schedule, final_lr)
        for g, lr in zip(optimizer.param_groups, base_lrs):
            g["lr"] = lr * mult
        batch = next_batch(step)
        with autocast(device, amp):
            loss = loss_fn(net, batch)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        probing = probe is not None and probe_every and (step + 1) % probe_every == 0
        before = [p.detach().clone() for p in params] if probing else None
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        running += loss.detach()
        n_running += 1
        if probing:
            t = time.perf_counter()
            hist.probes.append(dict(step=step + 1, **probe(step + 1, model, before, batch)))
            overhead += time.perf_counter() - t
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            log(step + 1)
            if not math.isfinite(hist.val_loss[-1]):
                print(f"{desc}: val loss {hist.val_loss[-1]} at step {step + 1}; stopping this run")
                break
            running, n_running = torch.zeros((), device=device), 0
        if step == 2 and steps > 6:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            mark = (time.perf_counter() - t0, overhead, step + 1)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if select is not None:
        model.eval()
        with torch.no_grad(), autocast(device, amp):
            hist.select_loss = float(select(net))
        model.train()
    t_mark, o_mark, s_mark = mark or (0.0, 0.0, 0)
    hist.step_time_s = (hist.time_s[-1] - t_mark - (overhead - o_mark)) / max(1, hist.steps[-1] - s_mark)
    return hist


def lm_loss(aux_coef: float = 0.0) -> Callable:
    """Cross-entropy (plus aux_coef times the model's MoE load-balancing loss)."""
    def loss_fn(model, batch):
        x, y = batch
        _, loss = model(x, y)
        return loss + aux_coef * model.aux_loss if aux_coef else loss
    return loss_fn


def stacked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each run of a stack: logits [R, B, C], labels [R, B] or shared [B] -> [R].
    Summing the result gives every run its own gradient."""
    labels = labels.expand(logits.shape[:2])
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none")
    return ce.view(labels.shape).mean(1)


def train_stack(stack: torch.nn.Module, optimizer: torch.optim.Optimizer, next_batch: Callable[[int], tuple],
                loss_fn: Callable, steps: int, rates, evaluate: Callable | None = None, eval_every: int | None = None,
                stop: Callable | None = None, warmup: int = 0, schedule: str = "cosine", final_lr: float = 0.0,
                examples_per_step: int = 1, amp: bool = True,
                select: Callable | None = None) -> list[History]:
    """Train the R members of a models.ModelStack side by side, member r as `train` would train it alone
    with learning rate rates[r]: one History per member.

    The optimizer is built on stack.parameters() with lr=1 (optim.member_step applies each member's
    rate times the schedule's multiplier). loss_fn(stack, batch) -> [R] per-member losses (e.g.
    stacked_cross_entropy); their sum gives every member its own gradient. evaluate(stack) -> [R]
    values, every `eval_every` steps and at the end; stop(values) -> [R] bools: a member that stops
    keeps its weights from then on and its History ends there (so does one whose value is not
    finite). The loop ends when every member has stopped. select(stack) -> [R] fills hist.select_loss.
    """
    from .optim.member_step import member_step
    if steps < 1 or (evaluate is not None and (eval_every or 0) < 1):
        raise ValueError(f"steps={steps} and eval_every={eval_every} must be >= 1")
    device = next(stack.parameters()).device
    rates = torch.as_tensor(rates, dtype=torch.float32, device=device)
    R = rates.numel()
    active = torch.ones(R, dtype=torch.bool, device=device)
    hists = [History() for _ in range(R)]
    running, n_running, t0 = torch.zeros(R, device=device), 0, time.perf_counter()

    def log(step):
        stack.eval()
        with torch.no_grad(), autocast(device, amp):
            values = torch.as_tensor(evaluate(stack), dtype=torch.float64).reshape(R).cpu() if evaluate else None
        stack.train()
        train_loss = (running / max(n_running, 1)).cpu()
        live = active.cpu()
        for r in range(R):
            if live[r]:
                h = hists[r]
                h.steps.append(step), h.tokens.append(step * examples_per_step), h.time_s.append(time.perf_counter() - t0)
                h.train_loss.append(float(train_loss[r]) if n_running else float("nan"))
                h.val_loss.append(float(values[r]) if values is not None else float("nan"))
        if values is not None:
            done = ~torch.isfinite(values) | (torch.as_tensor(stop(values), dtype=torch.bool).cpu() if stop else False)
            active.mul_(~done.to(device))

    stack.train()
    if evaluate:
        log(0)
    for step in range(steps):
        if not active.any():
            break
        batch = next_batch(step)
        with autocast(device, amp):
            losses = loss_fn(stack, batch)
        losses.sum().backward()
        mult = lr_multiplier(step, steps, warmup, schedule, final_lr)
        member_step(optimizer, rates * mult * active)
        optimizer.zero_grad(set_to_none=True)
        running += losses.detach().float()
        n_running += 1
        if evaluate and ((step + 1) % eval_every == 0 or step + 1 == steps):
            log(step + 1)
            running, n_running = torch.zeros(R, device=device), 0
    if select is not None:
        stack.eval()
        with torch.no_grad(), autocast(device, amp):
            scores = torch.as_tensor(select(stack), dtype=torch.float64).reshape(R).cpu()
        stack.train()
        for h, v in zip(hists, scores):
            h.select_loss = float(v)
    return hists


@torch.no_grad()
def evaluate_lm(model, batches) -> float:
    """Mean next-token cross-entropy (nats) over fixed evaluation batches."""
    return sum(float(model(x, y)[1]) for x, y in batches) / len(batches)


def train_lm(model, optimizer, train_tokens: torch.Tensor, val_tokens: torch.Tensor, *, steps: int,
             batch_size: int, seq_len: int, generator: torch.Generator, eval_every: int,
             eval_batches: int = 8, eval_batch_size: int | None = None, warmup: int | float = 0.0,
             aux_coef: float = 0.0, select_tokens: torch.Tensor | None = None, **kwargs) -> History:
    """Train a language model on random windows of `train_tokens`; evaluate on fixed val windows.
    `warmup` below 1 is a fraction of `steps`. Token tensors should already be on the device.
    select_tokens (a corpus's selection split): its loss after training becomes hist.select_loss."""
    ebs = eval_batch_size or batch_size
    val = lm_eval_batches(val_tokens, ebs, seq_len, eval_batches)
    sel = lm_eval_batches(select_tokens, ebs, seq_len, eval_batches) if select_tokens is not None else None
    warmup_steps = int(warmup * steps) if warmup < 1 else int(warmup)
    return train(model, optimizer, lambda step: lm_batch(train_tokens, batch_size, seq_len, generator),
                 lm_loss(aux_coef), steps, lambda m: evaluate_lm(m, val), eval_every,
                 warmup=warmup_steps, examples_per_step=batch_size * seq_len,
                 select=(lambda m: evaluate_lm(m, sel)) if sel is not None else None, **kwargs)


def multi_seed(fn: Callable[[int], object], seeds) -> list:
    """[fn(seed) for seed in seeds]: the runner every notebook uses, so a reader sees the seeds."""
    return [fn(seed) for seed in seeds]
