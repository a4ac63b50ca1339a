"""AdaPreLoRA: LoRA factors moved along Adafactor's preconditioned full-weight direction.

"AdaPreLoRA: Adafactor Preconditioned Low-Rank Adaptation", Ziyun Liu, Fengmiao Bian, Jian-Feng Cai
(2026), https://arxiv.org/abs/2605.08734 (no official code). Riemannian-preconditioned LoRA: Zhang &
Pilanci, "Riemannian Preconditioned LoRA for Fine-Tuning Foundation Models" (2024),
https://arxiv.org/abs/2402.02347.

With W = W0 + s B A (B m x r, A r x n) and G = dL/dW:
  Adafactor's factored second moment (Shazeer & Stern 2018, Alg. 4; beta2_t = 1 - t^-0.8):
      R_t = beta2_t R_{t-1} + (1 - beta2_t) mean_j G^2,  C_t = beta2_t C_{t-1} + (1 - beta2_t) mean_i G^2,
      V = R C^T / mean(R)  =  (h_r h_r^T) o (h_c h_c^T)  with  h_r = sqrt(R / mean R),  h_c = sqrt(C),
  so Adafactor's direction is D = H_r^-1 G H_c^-1 (H = diag(h)), RMS-clipped at d = 1.
  The factor step solves  min ||dB A + B dA - D / s||_H,  ||M||_H = ||H_r^1/2 M H_c^1/2||_F.
  With B~ = H_r^1/2 B, A~ = A H_c^1/2, D~ = H_r^1/2 (D / s) H_c^1/2 every solution is
      dA~ = (B~^T B~)^-1 B~^T D~ - X A~,    dB~ = (I - P_B~) D~ A~^T (A~ A~^T)^-1 + B~ X,
  its W-space step dB~ A~ + B~ dA~ = P_B~ D~ + (I - P_B~) D~ P_A~ the same for every r x r gauge X.
  X is chosen to balance the factors, argmin ||dB~ A~ - B~ dA~||_F, which in closed form is
      X = 1/2 (B~^T B~)^-1 B~^T D~ A~^T (A~ A~^T)^-1,
  and dB = H_r^-1/2 dB~, dA = dA~ H_c^-1/2. The r x r Gram solves are damped by delta I (absolute, with
  H^1/2 normalised to mean 1; the paper's damping is not public). Momentum beta1 acts on (dB, dA): the state is
  R, C (m + n numbers) and two momenta ((m + n) r): O((m + n) r), less than Adam's 2 (m + n) r.
G is formed per layer, transiently, by hooks during the backward pass (one layer's m x n at a time)
and reduced there to R, C and (dB, dA); nothing of size m x n is kept.
"""
import torch


def adafactor_stats(R: torch.Tensor, C: torch.Tensor, G: torch.Tensor, step: int, beta2_decay: float = -0.8,
                    eps1: float = 1e-30):
    """Adafactor's row / column second moments, in place (torch.optim.Adafactor's row_var, col_var):
    beta2_t = 1 - t^beta2_decay, R <- beta2_t R + (1 - beta2_t) mean_j (G^2 + eps1), C likewise over i."""
    w = step ** beta2_decay                     # 1 - beta2_t
    G2 = G * G + eps1
    R.lerp_(G2.mean(dim=1), w)
    C.lerp_(G2.mean(dim=0), w)
    return R, C


def adafactor_direction(G: torch.Tensor, R: torch.Tensor, C: torch.Tensor, d: float = 1.0, eps1: float = 1e-30):
    """D = G / sqrt(V), V = R C^T / mean(R), then Adafactor's update clipping D / max(1, RMS(D) / d).
    Returns (D, h_r, h_c) with V = (h_r h_r^T) o (h_c h_c^T)."""
    h_r = (R / R.mean().clamp(min=eps1)).sqrt()
    h_c = C.sqrt()
    D = G / (h_r[:, None] * h_c[None, :]).clamp(min=eps1)
    D = D / max(1.0, (D.pow(2).mean().sqrt() / d).item())
    return D, h_r, h_c


def _damped_solve(gram: torch.Tensor, rhs: torch.Tensor, delta: float):
    """(gram + delta I)^-1 rhs (delta = 0: the exact solve). Absolute damping: while a factor is near zero
    (B at LoRA's init) its Gram is below delta and the gauge X stays near zero instead of ~ 1 / |B|."""
    return torch.linalg.solve(gram + delta * torch.eye(len(gram), dtype=gram.dtype, device=gram.device), rhs)


def adaprelora_factor_step(B: torch.Tensor, A: torch.Tensor, D: torch.Tensor, h_r: torch.Tensor, h_c: torch.Tensor,
                           delta: float = 1e-3):
    """The H-weighted least-squares factor step with the balancing gauge -> (dB, dA, X)."""
    # H^1/2, each normalised to mean 1: the solution does not depend on H's overall scale, and the
    # damping delta then acts in the units of B and A
    wr, wc = h_r.sqrt()[:, None], h_c.sqrt()[None, :]
    wr, wc = wr / wr.mean(), wc / wc.mean()
    Bt, At, Dt = wr * B, A * wc, wr * D * wc            # B~, A~, D~
    GB, GA = Bt.T @ Bt, At @ At.T
    P = _damped_solve(GB, Bt.T @ Dt, delta)             # (B~^T B~)^-1 B~^T D~        (r x n)
    Q = _damped_solve(GA, At @ Dt.T, delta).T           # D~ A~^T (A~ A~^T)^-1        (m x r)
    X = 0.5 * _damped_solve(GA, (P @ At.T).T, delta).T  # 1/2 (B~^T B~)^-1 B~^T D~ A~^T (A~ A~^T)^-1
    dAt = P - X @ At
    dBt = Q - Bt @ _damped_solve(GB, Bt.T @ Q, delta) + Bt @ X   # (I - P_B~) Q + B~ X
    return dBt / wr, dAt / wc, X


class AdaPreLoRA(torch.optim.Optimizer):
    """AdaPreLoRA on the LoRA factors of `layers` ({name: LoRALinear}, A and B trained). It hooks each
    layer to form G = dL/dW during backward, turns it into (dB, dA) at once, and step() applies
    B <- B - lr m_B, A <- A - lr m_A with momentum m <- beta1 m + (1 - beta1) d."""

    def __init__(self, layers: dict, lr: float, beta1: float = 0.9, delta: float = 1e-3, d: float = 1.0,
                 beta2_decay: float = -0.8, eps1: float = 1e-30):
        self.layers = list(layers.values())
        params = [p for lay in self.layers for p in (lay.B, lay.A)]
        super().__init__(params, dict(lr=lr, beta1=beta1, delta=delta, d=d, beta2_decay=beta2_decay, eps1=eps1))
        self._handles = [lay.register_forward_hook(self._forward_hook) for lay in self.layers]

    def _forward_hook(self, lay, inputs, out):
        if out.requires_grad:
            x = inputs[0].detach()
            out.register_hook(lambda g, lay=lay, x=x: self._precondition(lay, x, g))

    @torch.no_grad()
    def _precondition(self, lay, x, g):
        m, n = lay.weight.shape
        G = g.reshape(-1, m).float().T @ x.reshape(-1, n).float()   # dL/dW, this layer only
        st = self.state[lay.B]
        group = self.param_groups[0]
        if "R" not in st:
            st.update(step=0, R=G.new_zeros(m), C=G.new_zeros(n), mB=torch.zeros_like(lay.B, dtype=torch.float32),
                      mA=torch.zeros_like(lay.A, dtype=torch.float32))
        st["step"] += 1
        adafactor_stats(st["R"], st["C"], G, st["step"], group["beta2_decay"], group["eps1"])
        D, h_r, h_c = adafactor_direction(G, st["R"], st["C"], group["d"], group["eps1"])
        st["dB"], st["dA"], _ = adaprelora_factor_step(lay.B.float(), lay.A.float(), D / lay.scale, h_r, h_c,
                                                       group["delta"])

    @torch.no_grad()
    def step(self, closure=None):
        group = self.param_groups[0]
        for lay in self.layers:
            st = self.state[lay.B]
            if "dB" not in st:
                continue
            for p, mom, upd in ((lay.B, st["mB"], st.pop("dB")), (lay.A, st["mA"], st.pop("dA"))):
                mom.lerp_(upd, 1 - group["beta1"])
                p.add_(mom.to(p.dtype), alpha=-group["lr"])

    def state_elements(self) -> int:
        """Optimizer-state numbers kept between steps: R, C and the two momenta."""
        return sum(self.state[lay.B][k].numel() for lay in self.layers for k in ("R", "C", "mB", "mA")
                   if k in self.state[lay.B])

    def remove_hooks(self):
        for h in self._handles:
            h.remove()


def riemannian_precondition(B: torch.Tensor, A: torch.Tensor, gB: torch.Tensor, gA: torch.Tensor,
                            delta: float = 1e-6):
    """Riemannian-preconditioned LoRA (Zhang & Pilanci 2024, Eq. 6; peft's riemannian optimizer):
    gA <- (B^T B + delta I)^-1 gA,  gB <- gB (A A^T + delta I)^-1 (absolute delta, as peft's reg)."""
    dt = torch.promote_types(gA.dtype, torch.float32)   # solve in at least fp32
    eye = torch.eye(A.shape[0], dtype=dt, device=A.device)
    B, A = B.to(dt), A.to(dt)
    gA_new = torch.linalg.solve(B.T @ B + delta * eye, gA.to(dt))
    gB_new = torch.linalg.solve(A @ A.T + delta * eye, gB.to(dt).T).T
    return gB_new, gA_new


class RiemannianAdamW(torch.optim.AdamW):
    """Scaled AdamW for LoRA: the factor gradients are preconditioned by riemannian_precondition (with the
    factors before the step) and then passed to AdamW."""

    def __init__(self, layers: dict, lr: float, delta: float = 1e-6, **kwargs):
        self.layers = list(layers.values())
        self.delta = delta
        super().__init__([p for lay in self.layers for p in (lay.B, lay.A)], lr=lr, **kwargs)

    @torch.no_grad()
    def step(self, closure=None):
        for lay in self.layers:
            if lay.B.grad is not None and lay.A.grad is not None:
                gB, gA = riemannian_precondition(lay.B, lay.A, lay.B.grad, lay.A.grad, self.delta)
                lay.B.grad.copy_(gB)
                lay.A.grad.copy_(gA)
        return super().step(closure)
