"""Annealed Gaussian gradient noise, as a wrapper around any optimizer.

Neelakantan, Vilnis, Le, Sutskever, Kaiser, Kurach & Martens, "Adding Gradient Noise Improves
Learning for Very Deep Networks", arXiv 1511.06807 ; there is no official code.

At every training step t = 0, 1, 2, ... each gradient gets fresh independent noise:

    g_t <- g_t + N(0, sigma_t^2 I),     sigma_t^2 = eta / (1 + t)^gamma

gamma = 0.55 and eta in {0.01, 0.3, 1.0} in the paper. The noise goes in inside step(), so it is
added after any gradient clipping done before step(), and is the same for any inner optimizer.
`GradientNoise(optimizer, eta)` is not an Optimizer itself: attach LR schedulers to the inner one.
"""
import torch


def noise_std(step: int, eta: float, gamma: float = 0.55) -> float:
    """sigma_t = sqrt(eta / (1 + t)^gamma)."""
    return (eta / (1 + step) ** gamma) ** 0.5


@torch.no_grad()
def add_gradient_noise(params, step: int, eta: float, gamma: float = 0.55,
                       generator: torch.Generator | dict | None = None) -> float:
    """Add N(0, eta / (1 + step)^gamma) to every p.grad in place (p.grad None is skipped); returns sigma.

    generator: one torch.Generator on the gradients' device, a {device: Generator} dict for
    parameters spread over devices, or None for the global RNG.
    """
    sigma = noise_std(step, eta, gamma)
    if sigma == 0:
        return 0.0  # eta = 0: leave the gradients (and the RNG) untouched
    for p in params:
        if p.grad is None:
            continue
        g = p.grad
        gen = generator.get(g.device) if isinstance(generator, dict) else generator
        g.add_(torch.randn(g.shape, generator=gen, device=g.device, dtype=g.dtype), alpha=sigma)
    return sigma


class GradientNoise:
    """Wraps an optimizer: step() adds annealed noise to the gradients, then steps the inner optimizer.

    seed: a private generator per device (reproducible, independent of the global RNG); None
    uses the global RNG. state_dict() holds the inner state, the noise step t and the generators.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, eta: float = 0.3, gamma: float = 0.55,
                 seed: int | None = None):
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        self.optimizer, self.eta, self.gamma, self.seed = optimizer, eta, gamma, seed
        self.noise_step = 0  # t of the next step
        self.generators: dict[torch.device, torch.Generator] = {}

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @property
    def state(self):
        return self.optimizer.state

    def _params(self):
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def _generators(self, params):
        if self.seed is None:
            return None
        for p in params:
            if p.grad is not None and p.grad.device not in self.generators:
                self.generators[p.grad.device] = torch.Generator(p.grad.device).manual_seed(self.seed)
        return self.generators

    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = self._params()
        add_gradient_noise(params, self.noise_step, self.eta, self.gamma, self._generators(params))
        self.noise_step += 1
        self.optimizer.step()
        return loss

    def zero_grad(self, set_to_none: bool = True):
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return dict(optimizer=self.optimizer.state_dict(), noise_step=self.noise_step,
                    generators={str(d): g.get_state() for d, g in self.generators.items()})

    def load_state_dict(self, state_dict: dict) -> None:
        self.optimizer.load_state_dict(state_dict["optimizer"])
        self.noise_step = state_dict["noise_step"]
        for name, rng_state in state_dict.get("generators", {}).items():
            device = torch.device(name)
            self.generators[device] = torch.Generator(device)
            self.generators[device].set_state(rng_state)

    def __repr__(self) -> str:
        return f"GradientNoise(eta={self.eta}, gamma={self.gamma}, seed={self.seed}, {self.optimizer!r})"
