"""SAM: sharpness-aware minimization, as a wrapper around any base optimizer.

Foret, Kleiner, Mobahi & Neyshabur, "Sharpness-Aware Minimization for Efficiently Improving
Generalization", ICLR 2021, arXiv 2010.01412 ; official code (JAX) https://github.com/google-research/sam.
The two-step PyTorch interface (first_step / second_step) is the one of davda54/sam and
pytorch-optimizer's SAM, the test oracle.

SAM minimises the worst loss in a ball of radius rho around the weights w,

    min_w  max_{||eps||_2 <= rho}  L_B(w + eps)             (the SAM objective; weight decay: base optimizer)
    eps_hat = rho g / ||g||_2,      g = grad L_B(w)         (first-order solution of the inner max, p = 2)
    g_SAM   = grad L_B(w') at w' = w + eps_hat              (the SAM gradient, second-order terms dropped)
    w      <- base optimizer step from w with g_SAM

so every step costs two forward and two backward passes: twice the base optimizer's. The global
norm ||g||_2 runs over every parameter with a gradient; rho = 0.05 is the paper's default.
"""
import torch
from torch import Tensor


@torch.no_grad()
def grad_norm(grads: list[Tensor]) -> Tensor:
    """||g||_2 of all of `grads` together (a 0-d tensor: no host sync)."""
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))


@torch.no_grad()
def sam_perturbation(grads: list[Tensor], rho: float, eps: float = 1e-12, norm: Tensor | None = None) -> list[Tensor]:
    """eps_hat = rho g / (||g||_2 + eps); `norm` overrides ||g||_2 (SAM takes it over every group)."""
    norm = grad_norm(grads) if norm is None else norm
    return [g * (rho / (norm + eps)).to(g.dtype) for g in grads]


class SAM(torch.optim.Optimizer):
    """SAM around `base_optimizer` (a torch.optim class; its kwargs pass through, e.g. lr, momentum).

    Either the two-step interface:
        loss_fn(model(x), y).backward(); opt.first_step(zero_grad=True)    # pass 1 at w, then w -> w + eps_hat
        loss_fn(model(x), y).backward(); opt.second_step(zero_grad=True)   # pass 2 at w + eps_hat; w back, base step
    or step(closure) with the gradients at w already computed and a closure that recomputes loss and
    gradients (pytorch-optimizer's convention). After first_step, a plain step() is second_step(), so
    reprolib.train.train can drive SAM through `sam_loss` below. The param groups (and their lr) are
    the base optimizer's, so lr schedules act on the base step.
    """

    def __init__(self, params, base_optimizer=torch.optim.SGD, rho: float = 0.05, eps: float = 1e-12, **kwargs):
        if rho < 0:
            raise ValueError(f"rho must be >= 0, got {rho}")
        super().__init__(params, dict(rho=rho, **kwargs))
        self.base_optimizer = base_optimizer(self.param_groups, **kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.eps = eps
        self._saved: list[tuple[Tensor, Tensor]] = []   # (parameter, its value at w) while perturbed

    @property
    def perturbed(self) -> bool:
        return bool(self._saved)

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """w -> w + eps_hat from the gradients at w (all groups share one norm, each its own rho)."""
        if self.perturbed:
            raise RuntimeError("first_step called twice without second_step")
        groups = [(g["rho"], [p for p in g["params"] if p.grad is not None]) for g in self.param_groups]
        if not any(ps for _, ps in groups):
            raise RuntimeError("first_step needs the gradients at w: call backward() first")
        norm = grad_norm([p.grad for _, ps in groups for p in ps])   # ||g||_2 over every parameter
        for rho, ps in groups:                                        # eps_hat = rho g / ||g||_2
            for p, e in zip(ps, sam_perturbation([p.grad for p in ps], rho, self.eps, norm)):
                self._saved.append((p, p.clone()))   # restore by copy: (w + e) - e is not w in floating point
                p.add_(e)
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """w + eps_hat -> w, then the base optimizer's step with the gradients taken at w + eps_hat."""
        if not self.perturbed:
            raise RuntimeError("second_step without first_step")
        for p, w in self._saved:
            p.copy_(w)
        self._saved.clear()
        self.base_optimizer.step()       # from w, with g_SAM = grad L_B at w + eps_hat (in p.grad)
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def step(self, closure=None):
        if self.perturbed:
            if closure is not None:
                raise RuntimeError("step(closure) after first_step: call second_step() instead")
            return self.second_step()
        if closure is None:
            raise RuntimeError("SAM needs a closure that recomputes the loss and gradients, "
                               "or first_step() before step()")
        self.first_step(zero_grad=True)
        with torch.enable_grad():
            loss = closure()
        self.second_step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base_optimizer.zero_grad(set_to_none=set_to_none)


def sam_loss(loss_fn, optimizer: SAM):
    """loss_fn(model, batch) -> loss, made a SAM step's for reprolib.train.train: the first pass (loss
    and gradient at w, then w -> w + eps_hat) runs inside, and the loss returned is the second pass's,
    at w + eps_hat. train() backpropagates it and calls optimizer.step(), which restores w and takes
    the base step. The training loss train() logs is therefore the perturbed loss L_B(w + eps_hat)."""
    def two_pass(model, batch):
        loss_fn(model, batch).backward()
        optimizer.first_step(zero_grad=True)
        return loss_fn(model, batch)
    return two_pass
