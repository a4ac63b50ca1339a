"""Neural-collapse metrics of a classifier's features (Papyan, Han & Donoho 2020, arXiv 2008.08186;
the definitions of Tirer, Huang & Niles-Weed 2023, "Perturbation Analysis of Neural Collapse",
arXiv 2210.16658, Sections 3 and 5).

Features h_i in R^d with labels y_i in {0..K-1}; class means mu_k, global mean mu_G (of all samples);
M = [mu_1 - mu_G, ..., mu_K - mu_G] (the centred class means, one per row here):

    Sigma_W = 1/N sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T            within-class covariance
    Sigma_B = 1/K sum_k (mu_k - mu_G)(mu_k - mu_G)^T                   between-class covariance
    nc1              = Tr(Sigma_W Sigma_B^+) / K                        (Section 5; Papyan et al.)
    nc1_trace_ratio  = Tr(Sigma_W) / Tr(Sigma_B)                        (eq. 3, "NC1-tilde")
    nc2_etf_distance = || M M^T / ||M M^T||_F - (I_K - 1 1^T / K) / sqrt(K - 1) ||_F   (Section 5)
    nc3_self_duality = || W / ||W||_F - M / ||M||_F ||_F                (classifier W [K, d]; Papyan's
                                                                         NC3, not squared here)

All are 0 at exact collapse: no within-class spread, centred means forming a simplex equiangular
tight frame (any scale, rotation and global offset), and a classifier proportional to them.

Every function takes features [..., N, d] (a stack of runs shares one label vector [N]) and returns
a float64 tensor of shape [...]; the computation runs in float64.
"""
import math

import torch

__all__ = ["class_means", "covariances", "covariance_traces", "nc1", "nc1_trace_ratio", "nc2_etf_distance",
           "nc3_self_duality", "collapse_metrics"]


def _prepare(features: torch.Tensor, labels: torch.Tensor, n_classes: int | None):
    if features.ndim < 2 or labels.ndim != 1 or features.shape[-2] != labels.shape[0]:
        raise ValueError(f"features [..., N, d] and labels [N] do not pair: {tuple(features.shape)}, "
                         f"{tuple(labels.shape)}")
    K = int(n_classes if n_classes is not None else labels.max() + 1)
    onehot = torch.nn.functional.one_hot(labels.long(), K).to(features.device, torch.float64)   # [N, K]
    counts = onehot.sum(0)
    if bool((counts == 0).any()):
        raise ValueError(f"class(es) {torch.nonzero(counts == 0).flatten().tolist()} have no samples")
    return features.detach().to(torch.float64), onehot, counts, K


def class_means(features: torch.Tensor, labels: torch.Tensor, n_classes: int | None = None):
    """(means [..., K, d], global mean [..., d]); the global mean is over all samples."""
    h, onehot, counts, _ = _prepare(features, labels, n_classes)
    return (onehot.T @ h) / counts[:, None], h.mean(-2)


def _parts(features, labels, n_classes):
    """Within-class residuals [..., N, d], centred means M [..., K, d], K."""
    h, onehot, counts, K = _prepare(features, labels, n_classes)
    mu = (onehot.T @ h) / counts[:, None]
    return h - onehot @ mu, mu - h.mean(-2, keepdim=True), K


def covariances(features: torch.Tensor, labels: torch.Tensor, n_classes: int | None = None):
    """(Sigma_W, Sigma_B), each [..., d, d] (module docstring)."""
    resid, M, K = _parts(features, labels, n_classes)
    return resid.mT @ resid / resid.shape[-2], M.mT @ M / K


def covariance_traces(features: torch.Tensor, labels: torch.Tensor, n_classes: int | None = None):
    """(Tr Sigma_W, Tr Sigma_B), each [...], without forming d x d matrices."""
    resid, M, K = _parts(features, labels, n_classes)
    return resid.square().sum((-2, -1)) / resid.shape[-2], M.square().sum((-2, -1)) / K


def nc1(features: torch.Tensor, labels: torch.Tensor, n_classes: int | None = None) -> torch.Tensor:
    """Tr(Sigma_W Sigma_B^+) / K. Sigma_B = V S^2 V^T / K from the SVD of M (at most K - 1 non-zero
    singular values, cut as torch.linalg.pinv does: below max(K, d) * eps * the largest), so
    Tr(Sigma_W Sigma_B^+) = sum_j K / s_j^2 * ||resid v_j||^2 / N without forming a d x d matrix."""
    resid, M, K = _parts(features, labels, n_classes)
    bad = ~torch.isfinite(M).all(-1).all(-1)          # a diverged run of a stack: NaN for it, not an SVD error
    _, s, Vh = torch.linalg.svd(torch.where(bad[..., None, None], 0.0, M), full_matrices=False)   # s [..., K]
    keep = s > s[..., :1] * max(M.shape[-2:]) * torch.finfo(s.dtype).eps
    inv = torch.where(keep, K / s.clamp_min(torch.finfo(s.dtype).tiny) ** 2, torch.zeros_like(s))
    proj = (resid @ Vh.mT).square().sum(-2) / resid.shape[-2]                # v_j^T Sigma_W v_j  [..., K]
    return torch.where(bad, torch.nan, (inv * proj).sum(-1) / K)


def nc1_trace_ratio(features: torch.Tensor, labels: torch.Tensor, n_classes: int | None = None) -> torch.Tensor:
    """Tr(Sigma_W) / Tr(Sigma_B): eq. 3, the quantity Theorem 3.1 shows decreasing."""
    tr_w, tr_b = covariance_traces(features, labels, n_classes)
    return tr_w / tr_b


def nc2_etf_distance(features: torch.Tensor, labels: torch.Tensor, n_classes: int | None = None) -> torch.Tensor:
    """Frobenius distance of the normalised Gram matrix of the centred means to the simplex ETF's,
    both scaled to unit Frobenius norm (||I - 1 1^T / K||_F = sqrt(K - 1))."""
    _, M, K = _parts(features, labels, n_classes)
    G = M @ M.mT
    etf = (torch.eye(K, dtype=G.dtype, device=G.device) - 1.0 / K) / math.sqrt(K - 1)
    return torch.linalg.matrix_norm(G / torch.linalg.matrix_norm(G)[..., None, None] - etf)


def nc3_self_duality(classifier: torch.Tensor, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """|| W / ||W||_F - M / ||M||_F ||_F for a classifier W [..., K, d] (rows: classes) and the centred
    means M [..., K, d] of the features it reads."""
    _, M, K = _parts(features, labels, classifier.shape[-2])
    W = classifier.detach().to(torch.float64)
    unit = lambda A: A / torch.linalg.matrix_norm(A)[..., None, None]
    return torch.linalg.matrix_norm(unit(W) - unit(M))


def collapse_metrics(features: torch.Tensor, labels: torch.Tensor, classifier: torch.Tensor | None = None,
                     n_classes: int | None = None) -> dict:
    """{'nc1', 'nc1_trace_ratio', 'nc2', ('nc3' when a classifier is given)}: tensors of shape [...]."""
    out = dict(nc1=nc1(features, labels, n_classes), nc1_trace_ratio=nc1_trace_ratio(features, labels, n_classes),
               nc2=nc2_etf_distance(features, labels, n_classes))
    if classifier is not None:
        out["nc3"] = nc3_self_duality(classifier, features, labels)
    return out
