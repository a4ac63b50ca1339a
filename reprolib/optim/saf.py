"""SAF and MESA: sharpness-aware training for free, through a trajectory loss.

Du, Zhou, Feng, Tan & Zhou, "Sharpness-Aware Training for Free", NeurIPS 2022, arXiv 2205.14083 ;
official code https://github.com/AngusDujw/SAF (SAF_train.py, MESA_train.py, run.sh; timm-based),
which this follows line by line where the paper leaves a choice open.

SAM (reprolib.optim.sam) estimates the sharpness with a second forward and backward pass at
perturbed weights. SAF replaces it by the trajectory loss: the KL divergence between the network's
outputs for the samples of the batch now and its outputs for the same samples E~ epochs ago,
which were recorded for free by that epoch's own forward passes:

    L_tra = lambda / |B| sum_{x_i in B} tau^2 KL( softmax(y_i^(e - E~) / tau) || softmax(f_theta(x_i) / tau) )
    L     = L_B(f_theta) + L_tra   in epochs e > E_start,    L = L_B(f_theta) before

y_i^(e - E~) are the logits f(x_i) recorded (detached) in epoch e - E~. A sharp minimum is one
where the loss drops suddenly along the trajectory, so the outputs change fast; penalising that
change keeps the weights out of such minima at no extra pass. The tau^2 factor (the usual
distillation scaling, which keeps the gradient's size independent of tau) is the official code's:

    KL_loss = F.kl_div(F.softmax(output / T).log(), F.softmax(past / T), reduction="none").sum(-1).mean() * T**2
    loss += KL_loss * reinforce                                      (SAF_train.py, train_one_epoch)

The bank has E~ + 1 slots per sample: epoch e writes slot e mod (E~ + 1) and reads slot
(e - E~) mod (E~ + 1), as SAF_train.py's train_logits[indices, epoch % (minus_epoch + 1)]. The
trajectory term starts in the first epoch after E_start (`epoch > kl_start_epoch`, 0-based epochs).
Defaults (README and run.sh): lambda = 0.3 for SAF, 0.8 for MESA; tau = 5; E_start = 5; E~ = 2
(SAF_train.py's argparse defaults are lambda 0.16, E~ 3).

MESA (memory-efficient SAF) takes the reference outputs from an exponential moving average of the
weights instead of a per-sample bank: no N x C memory, one extra forward pass per step,

    v_t = beta v_{t-1} + (1 - beta) theta_t,     y_i = f_{v_t}(x_i)   (timm's ModelEmaV2, in eval mode)

MESA_train.py uses decay beta = 0.9998 (timm's default, set for ImageNet's step count).
"""
import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def trajectory_kl(logits: Tensor, past_logits: Tensor, tau: float = 5.0) -> Tensor:
    """tau^2 / |B| sum_i KL( softmax(past_i / tau) || softmax(logits_i / tau) ); no gradient to `past_logits`."""
    # at least float32 (bf16 logits under autocast), float64 kept: a check against the official line in
    # float64 is then an exact-arithmetic check, not one of float32 rounding
    dtype = torch.promote_types(logits.dtype, torch.float32)
    log_q = F.log_softmax(logits.to(dtype) / tau, dim=-1)                # log softmax(f_theta(x_i) / tau)
    log_p = F.log_softmax(past_logits.detach().to(dtype) / tau, dim=-1)  # log softmax(y_i^(e - E~) / tau)
    # mean_i KL(p_i || q_i) times tau^2: L_tra / lambda, as SAF_train.py's KL_loss (log_target: no log(0))
    return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True) * tau ** 2


class OutputBank:
    """Per-sample logits of the last lag + 1 epochs: slot e mod (lag + 1) holds epoch e's.

    `epoch_of` records which epoch each entry came from (-1: never written), so a reader can check
    that a reference really is `lag` epochs old (a sample skipped by a dropped last batch is not).
    """

    def __init__(self, n_samples: int, n_classes: int, lag: int = 2, device=None):
        if lag < 1:
            raise ValueError(f"lag (E~) must be >= 1 epoch, got {lag}")
        self.lag = lag
        self.logits = torch.zeros(lag + 1, n_samples, n_classes, device=device)
        self.epoch_of = torch.full((lag + 1, n_samples), -1, dtype=torch.long, device=device)

    def record(self, idx: Tensor, logits: Tensor, epoch: int) -> None:
        slot = epoch % (self.lag + 1)
        self.logits[slot, idx] = logits.detach().float()
        self.epoch_of[slot, idx] = epoch

    def past(self, idx: Tensor, epoch: int) -> Tensor:
        """The logits of samples `idx` recorded in epoch `epoch - lag`."""
        return self.logits[(epoch - self.lag) % (self.lag + 1), idx]

    def age(self, idx: Tensor, epoch: int) -> Tensor:
        """epoch minus the epoch each returned reference was recorded in (lag when all is well)."""
        return epoch - self.epoch_of[(epoch - self.lag) % (self.lag + 1), idx]


class SAF:
    """The SAF objective's extra term, for a loss function: `ce + saf.loss(logits, idx, epoch)`.

    loss() records this step's logits in the bank and returns lambda L_tra against the logits of
    the same samples E~ (= lag) epochs ago from epoch start_epoch + 1 on, a zero before. Sample ids
    `idx` index the training set (a long tensor on the bank's device). A reference is exactly `lag`
    epochs old when every sample is seen once per epoch; `bank.age` checks it (off the step's path,
    which it would slow down)."""

    def __init__(self, n_samples: int, n_classes: int, lam: float = 0.3, tau: float = 5.0, start_epoch: int = 5,
                 lag: int = 2, device=None):
        if start_epoch + 1 < lag:
            raise ValueError(f"start_epoch={start_epoch} leaves no reference {lag} epochs back "
                             f"at epoch {start_epoch + 1}")
        self.lam, self.tau, self.start_epoch = lam, tau, start_epoch
        self.bank = OutputBank(n_samples, n_classes, lag, device)

    def active(self, epoch: int) -> bool:
        return epoch > self.start_epoch

    def loss(self, logits: Tensor, idx: Tensor, epoch: int) -> Tensor:
        self.bank.record(idx, logits, epoch)          # Y^(e): this epoch's outputs, for epoch e + E~
        if not self.active(epoch):                    # L = L_B until epoch E_start
            return logits.new_zeros((), dtype=torch.float32)
        return self.lam * trajectory_kl(logits, self.bank.past(idx, epoch), self.tau)   # L_tra against Y^(e - E~)


class MESA:
    """MESA's extra term: lambda L_tra against the outputs of an EMA of the weights.

    loss(model, logits, x, epoch) first moves the EMA to the weights the step starts from, which is
    timm's update after the previous optimizer step (the same average), then runs the EMA model (eval
    mode, no gradient) on x: one extra forward pass, taken only in the epochs where the term is on."""

    def __init__(self, model: nn.Module, lam: float = 0.8, tau: float = 5.0, start_epoch: int = 5,
                 decay: float = 0.9998):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.lam, self.tau, self.start_epoch, self.decay = lam, tau, start_epoch, decay
        self.ema = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """v <- decay v + (1 - decay) theta for floating-point parameters and buffers; others copied."""
        pairs = [(e, m) for e, m in zip(self.ema.state_dict().values(), model.state_dict().values())]
        flt = [(e, m) for e, m in pairs if e.is_floating_point()]
        if flt:
            torch._foreach_lerp_([e for e, _ in flt], [m.detach() for _, m in flt], 1.0 - self.decay)
        for e, m in pairs:
            if not e.is_floating_point():
                e.copy_(m)

    def active(self, epoch: int) -> bool:
        return epoch > self.start_epoch

    def loss(self, model: nn.Module, logits: Tensor, x: Tensor, epoch: int) -> Tensor:
        self.update(model)                            # v_t from theta_t, the weights this step starts from
        if not self.active(epoch):
            return logits.new_zeros((), dtype=torch.float32)
        with torch.no_grad():
            reference = self.ema(x)                   # y_i = f_{v_t}(x_i): the extra forward pass
        return self.lam * trajectory_kl(logits, reference, self.tau)
