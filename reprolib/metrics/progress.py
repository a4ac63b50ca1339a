"""Training-progress summaries of loss curves.

    ema(x, alpha):      s_0 = x_0,  s_t = alpha x_t + (1 - alpha) s_{t-1}
    steps_to_target:    first x* with y(x*) = target on the (smoothed) curve,
                        y linear between evaluations:
                        x* = x_{i-1} + (target - y_{i-1}) (x_i - x_{i-1}) / (y_i - y_{i-1})
    steps_fraction:     steps_to_target / the run's length
    tail_drop:          y(x at (1 - tail) of the run) - y_final, y linear between evaluations
    tail_share:         tail_drop / (y_0 - y_final): the share of the run's whole drop that came
                        in its last `tail` (a loss still falling at a steady rate gives `tail`)
    median_spread:      median, min, max and count over seeds, NaN dropped
    classification_error: fraction of examples whose argmax prediction is wrong

tail_drop and tail_share are the "loss has flattened" regime checks of the notebooks.
"""

import math

import numpy as np
from scipy.signal import lfilter

__all__ = ["ema", "steps_to_target", "steps_fraction", "tail_drop", "tail_share", "median_spread",
           "classification_error"]


def ema(values, alpha: float) -> np.ndarray:
    """Exponential moving average, same length as values; alpha = 1 is the identity.

    As in the recurrence, a NaN or inf (a diverged run) makes every later
    entry NaN or inf.
    """
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0 or alpha == 1:
        return x.copy()
    # the recurrence as an IIR filter; zi seeds s_{-1} = x_0 so that s_0 = x_0
    s, _ = lfilter([alpha], [1.0, alpha - 1.0], x, zi=[(1.0 - alpha) * x[0]])
    bad = ~np.isfinite(x)
    if bad.any():
        # lfilter's state update multiplies inf by 0 (NaN); past the first
        # non-finite x the recurrence is just the running sum of the infinities
        i = int(bad.argmax())
        with np.errstate(invalid="ignore"):  # inf + -inf = NaN is intended
            s[i:] = np.cumsum(np.where(bad[i:], x[i:], 0.0))
    return s


def steps_to_target(steps, values, target: float, smooth: float | None = None) -> float:
    """First x (step or token count) at which the curve reaches values <= target.

    With `smooth`, the curve is first replaced by ema(values, alpha=smooth).
    The crossing is interpolated linearly between the two evaluations that
    bracket it; returns steps[0] if values[0] <= target and inf if never
    reached. If the evaluation before the crossing is not finite (NaN, inf)
    there is nothing to interpolate from and the crossing step itself is
    returned.
    """
    x = np.asarray(steps, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or y.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"steps and values must be 1-D of equal length, got {x.shape} and {y.shape}")
    if x.size == 0:
        raise ValueError("steps and values are empty")
    if np.any(np.diff(x) <= 0):
        raise ValueError("steps must be strictly increasing")
    if smooth is not None:
        y = ema(y, smooth)
    hit = np.flatnonzero(y <= target)
    if hit.size == 0:
        return math.inf
    i = int(hit[0])
    if i == 0:
        return float(x[0])
    if not np.isfinite(y[i - 1]):
        return float(x[i])
    # y[i-1] > target >= y[i], so the slope is nonzero
    return float(x[i - 1] + (target - y[i - 1]) * (x[i] - x[i - 1]) / (y[i] - y[i - 1]))


def steps_fraction(steps, values, target: float, total: float | None = None) -> float:
    """steps_to_target as a fraction of the run (`total`, default the last evaluated step); inf: never."""
    total = float(total if total is not None else np.asarray(steps, dtype=np.float64)[-1])
    return steps_to_target(steps, values, target) / total


def tail_drop(steps, values, tail: float = 0.25) -> float:
    """How much the curve fell over the last `tail` of the run: y(x_end - tail * x_end) - y_end."""
    if not 0 < tail < 1:
        raise ValueError(f"tail must be in (0, 1), got {tail}")
    x = np.asarray(steps, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    return float(np.interp(x[-1] - tail * (x[-1] - x[0]), x, y) - y[-1])


def tail_share(steps, values, tail: float = 0.25) -> float:
    """The share of the whole drop y_0 - y_end that came in the last `tail` of the run."""
    y = np.asarray(values, dtype=np.float64)
    total = y[0] - y[-1]
    return tail_drop(steps, values, tail) / total if total > 0 else math.inf


def median_spread(values) -> dict:
    """dict(median, min, max, n) over the non-NaN values ("median over seeds, with spread").

    Infinities are kept, so runs that never reach a target pull the median to
    inf once they are the majority. With no non-NaN value the statistics are NaN.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[~np.isnan(v)]
    if v.size == 0:
        return dict(median=math.nan, min=math.nan, max=math.nan, n=0)
    return dict(median=float(np.median(v)), min=float(v.min()), max=float(v.max()), n=int(v.size))


def classification_error(model, x, y, chunk: int = 2500) -> float:
    """Fraction of rows of x whose argmax logit differs from y, evaluated in chunks (no gradients)."""
    import torch
    with torch.no_grad():
        wrong = sum(int((model(x[i:i + chunk]).argmax(1) != y[i:i + chunk]).sum()) for i in range(0, len(x), chunk))
    return wrong / len(x)
