"""Frozen-representation evaluations: a linear probe (multinomial logistic regression), the weighted
kNN classifier of self-supervised learning, and the overlap of two similarity histograms.

    acc = linear_probe(f_train, y_train, [f_val, f_test], [y_val, y_test])     # one accuracy per split
    acc = knn_accuracy(f_train, y_train, f_test, y_test, k=200, t=0.1)

linear_probe: full-batch L-BFGS on mean cross-entropy + weight_decay/2 ||W||^2 over standardised
features (train statistics), the objective of scikit-learn's LogisticRegression with
C = 1 / (weight_decay * n) (the test checks it against that solver).
knn_accuracy: Wu et al. 2018 (arXiv 1805.01978), as the SSL literature evaluates: cosine similarity
to every training feature, the k nearest vote for their class with weight exp(s / t).
"""
import torch
import torch.nn.functional as F

__all__ = ["histogram_overlap", "knn_accuracy", "linear_probe"]


def linear_probe(f_train: torch.Tensor, y_train: torch.Tensor, f_eval, y_eval, n_classes: int | None = None,
                 weight_decay: float = 1e-4, max_iter: int = 200) -> list[float]:
    """Fit a linear softmax classifier on (f_train, y_train); accuracy (%) on each (f_eval[i], y_eval[i])."""
    n_classes = n_classes or int(y_train.max()) + 1
    with torch.enable_grad(), torch.autocast(device_type=f_train.device.type, enabled=False):
        mu, sd = f_train.float().mean(0), f_train.float().std(0) + 1e-6
        x = ((f_train.float() - mu) / sd).detach()
        w = torch.zeros(x.shape[1], n_classes, device=x.device, requires_grad=True)
        b = torch.zeros(n_classes, device=x.device, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                                history_size=20, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(x @ w + b, y_train) + 0.5 * weight_decay * w.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            return [100.0 * float(((((f.float() - mu) / sd) @ w + b).argmax(1) == y).float().mean())
                    for f, y in zip(f_eval, y_eval)]


@torch.no_grad()
def knn_accuracy(f_train: torch.Tensor, y_train: torch.Tensor, f_test: torch.Tensor, y_test: torch.Tensor,
                 k: int = 200, t: float = 0.1, chunk: int = 1024) -> float:
    """Weighted kNN accuracy (%): the k most cosine-similar training features vote exp(s/t) for their class."""
    n_classes = int(y_train.max()) + 1
    bank = F.normalize(f_train.float(), dim=1)
    correct = 0
    for i in range(0, len(f_test), chunk):
        sim = F.normalize(f_test[i:i + chunk].float(), dim=1) @ bank.T
        s, idx = sim.topk(min(k, len(bank)), dim=1)
        votes = torch.zeros(len(sim), n_classes, device=sim.device).scatter_add_(1, y_train[idx], torch.exp(s / t))
        correct += int((votes.argmax(1) == y_test[i:i + chunk]).sum())
    return 100.0 * correct / len(f_test)


def histogram_overlap(a: torch.Tensor, b: torch.Tensor, bins: int = 50, lo: float = -1.0, hi: float = 1.0) -> float:
    """Overlap sum_bins min(p_a, p_b) of two normalised histograms on [lo, hi]: 1 identical, 0 disjoint."""
    ha = torch.histc(a.float().flatten().clamp(lo, hi), bins, lo, hi)
    hb = torch.histc(b.float().flatten().clamp(lo, hi), bins, lo, hi)
    return float(torch.minimum(ha / ha.sum(), hb / hb.sum()).sum())
