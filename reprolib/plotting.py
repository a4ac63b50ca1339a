"""One figure style for the whole collection, and the few plot helpers notebooks share."""
import matplotlib.pyplot as plt
import numpy as np

COLORS = {"adamw": "#4C72B0", "muon": "#DD8452", "normuon": "#55A868", "gd": "#8172B3",
          "sgd": "#8172B3", "adam": "#4C72B0"}
STYLE = {"figure.dpi": 100, "savefig.dpi": 100, "axes.grid": True, "grid.alpha": 0.3,
         "axes.spines.top": False, "axes.spines.right": False, "font.size": 10,
         "axes.titlesize": 11, "legend.frameon": False, "figure.constrained_layout.use": True}


def use_style() -> None:
    plt.rcParams.update(STYLE)


def color(name: str, i: int = 0) -> str:
    return COLORS.get(name.lower(), plt.rcParams["axes.prop_cycle"].by_key()["color"][i % 10])


def seed_band(ax, x, ys, label=None, color=None, alpha=0.2, **kwargs):
    """Median over seeds as a line, min-max over seeds as a band. ys: [n_seeds, len(x)]."""
    ys = np.asarray(ys, dtype=float)
    (line,) = ax.plot(x, np.median(ys, 0), label=label, color=color, **kwargs)
    if len(ys) > 1:
        ax.fill_between(x, ys.min(0), ys.max(0), color=line.get_color(), alpha=alpha, lw=0)
    return line
