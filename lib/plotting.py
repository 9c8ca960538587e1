"""The book's figure style: opaque backgrounds, colour-blind-safe colours, one colour
per kernel.

Colours are from the Okabe-Ito palette: Softmax is always blue, Gaussian always
vermillion.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import math

import matplotlib as mpl
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np

__all__ = [
    "KERNEL_COLORS",
    "KERNEL_LABELS",
    "kernel_color",
    "use_book_style",
    "plot_loss_curves",
    "plot_kernel_matrix",
    "new_figure",
    "plot_log_contours",
]

KERNEL_COLORS = {
    "softmax": "#0072B2",  # blue
    "gaussian": "#D55E00",  # vermillion
    "gaussian_normalized": "#009E73",  # bluish green
}
KERNEL_LABELS = {
    "softmax": "Softmax",
    "gaussian": "Gaussian",
    "gaussian_normalized": "Gaussian (row-normalised)"
}
_OTHER_COLORS = ["#E69F00", "#56B4E9", "#CC79A7", "#F0E442", "#000000"]

BOOK_STYLE = {
    "figure.facecolor": "white",
    "axes.facecolor": "white",
    "savefig.facecolor": "white",
    "savefig.transparent": False,
    "figure.dpi": 110,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "font.size": 10,
    "legend.frameon": False,
    "axes.prop_cycle": mpl.cycler(
        color=[KERNEL_COLORS["softmax"], KERNEL_COLORS["gaussian"], *_OTHER_COLORS]),
}


def use_book_style() -> None:
    """Apply the book's matplotlib style globally (opaque white backgrounds,
    palette, grid)."""
    mpl.rcParams.update(BOOK_STYLE)


def kernel_color(kernel: str) -> str:
    """The colour of a kernel in every figure of the book."""
    if kernel not in KERNEL_COLORS:
        raise ValueError(
            f"unknown kernel {kernel!r}; valid: {', '.join(KERNEL_COLORS)}")
    return KERNEL_COLORS[kernel]


def new_figure(ncols: int = 1, nrows: int = 1, width: float = 4.2, height: float = 3.2,
               **kwargs):
    """``plt.subplots`` in the book's style, with an opaque figure background."""
    use_book_style()
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows),
                             **kwargs)
    fig.patch.set_facecolor("white")
    return fig, axes


def plot_loss_curves(
    ax: plt.Axes,
    curves: Mapping[str, Sequence[Sequence[float]]],
    *,
    band: str = "minmax",
    log: bool = True,
    xlabel: str = "GD step t",
    ylabel: str = r"loss $f(\theta_t)$",
) -> plt.Axes:
    """Median loss curve with a band over seeds, one colour per kernel.

    curves: {kernel name: [loss curve of seed 0, seed 1, ...]}; curves of different
    lengths (early stops) are padded with their last value. band: "minmax" or "iqr"
    (25th-75th percentile).
    """
    if band not in ("minmax", "iqr"):
        raise ValueError(f"band must be 'minmax' or 'iqr', got {band!r}")
    for i, (name, runs) in enumerate(curves.items()):
        if len(runs) == 0:
            raise ValueError(
                f"curves[{name!r}] is empty: expected at least one loss curve")
        length = max(len(r) for r in runs)
        data = np.array([list(r) + [r[-1]] * (length - len(r)) for r in runs],
                        dtype=float)
        color = KERNEL_COLORS.get(name, _OTHER_COLORS[i % len(_OTHER_COLORS)])
        steps = np.arange(length)
        if band == "minmax":
            low, high = data.min(0), data.max(0)
        else:
            low, high = np.percentile(data, 25, axis=0), np.percentile(data, 75, axis=0)
        label = f"{KERNEL_LABELS.get(name, name)} (median of {len(runs)})" if len(
            runs) > 1 else KERNEL_LABELS.get(name, name)
        ax.plot(steps, np.median(data, 0), color=color, label=label, lw=1.8)
        if len(runs) > 1:
            ax.fill_between(steps, low, high, color=color, alpha=0.2, lw=0)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend()
    return ax


def plot_kernel_matrix(ax: plt.Axes, S, title: str = "", vmax: float | None = None,
                       cbar: bool = True) -> plt.Axes:
    """Heat map of one attention matrix S: (n, n) (row k = query token k, column j =
    key token j)."""
    S = np.asarray(S.detach().cpu() if hasattr(S, "detach") else S, dtype=float)
    if S.ndim != 2 or S.shape[0] != S.shape[1]:
        raise ValueError(f"S must be a square (n, n) matrix, got shape {S.shape}")
    image = ax.imshow(S, cmap="viridis", vmin=0.0,
                      vmax=vmax if vmax is not None else max(S.max(), 1e-12))
    ax.set_title(title)
    ax.set_xlabel("key token j")
    ax.set_ylabel("query token k")
    ax.grid(False)
    if cbar:
        ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return ax


def plot_seed_band(ax: plt.Axes, steps, runs, kernel: str, confidence: float = 0.95,
                   label: str | None = None, **line_kw) -> plt.Axes:
    """Mean over seeds with its Student-t confidence band
    (``lib.seed_stats.mean_interval``).

    steps: (T,); runs: (seeds, T) curves of one kernel, drawn in the kernel's
    colour. With a single seed only the curve is drawn.
    """
    from .seed_stats import mean_interval

    runs = np.asarray(runs, dtype=float)
    mean, lo, hi = mean_interval(runs, confidence)
    color = kernel_color(kernel)
    if label is None:
        label = (
            f"{KERNEL_LABELS.get(kernel, kernel)} (mean of {runs.shape[0]},"
            f" {confidence:.0%} band)"
        )
    ax.plot(steps, mean, color=color, label=label, **{"lw": 1.8, **line_kw})
    if runs.shape[0] > 1:
        ax.fill_between(steps, lo, hi, color=color, alpha=0.2, lw=0)
    return ax


def plot_test_curves(steps, acc: Mapping[str, object], loss: Mapping[str, object],
                     title: str = "", xlabel: str = "SGD step",
                     confidence: float = 0.95):
    """Two panels: mean test accuracy and test loss over seeds with t bands, per kernel.

    steps: (T,); acc, loss: {kernel: (seeds, T)}. Chance levels (0.5 and ln 2, two
    balanced classes) are drawn dashed. Returns the figure.
    """
    fig, axes = new_figure(ncols=2, width=4.6, height=3.3)
    for ax, curves, ylabel, chance in ((axes[0], acc, "test accuracy", 0.5),
                                       (axes[1], loss, "test loss (cross-entropy)",
                                        float(np.log(2)))):
        for kernel, runs in curves.items():
            plot_seed_band(ax, steps, runs, kernel, confidence, marker="o", ms=3)
        ax.axhline(chance, color="0.4", ls="--", lw=1, label="chance")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    axes[0].legend(loc="lower right", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_log_contours(
    panels: Sequence[tuple[str, str, np.ndarray, np.ndarray]],
    span: tuple[float, float],
    xlabel: str,
    ylabel: str,
    marks: Sequence[tuple[float, float, str]] = (),
):
    """Loss planes side by side, coloured by log10(Z / Z(centre)) on one common scale.

    panels: [(title, title colour, alphas (num,), Z (num, num))], Z[i, j] at (alphas[i],
    alphas[j]) with the centre at the middle grid point (e.g. from
    ``lib.landscape.attention_plane``); a white + marks the centre, ``marks`` adds
    (x, y, matplotlib style) markers. Returns (figure, axes); the caller shows it.
    """
    if not panels:
        raise ValueError("panels must contain at least one (title, colour, alphas, Z)")
    logs = [np.log10(Z / Z[len(a) // 2, len(a) // 2]) for _, _, a, Z in panels]
    low = math.floor(min(float(l.min()) for l in logs) * 10) / 10
    high = math.ceil(max(float(l.max()) for l in logs) * 10) / 10
    levels = np.linspace(low, max(high, low + 0.1), 21)
    fig, axes = new_figure(ncols=len(panels), width=3.9, height=3.6)
    axes = np.atleast_1d(axes)
    for ax, (title, colour, a, _), L in zip(axes, panels, logs):
        image = ax.contourf(a, a, L.T, levels=levels, cmap="viridis")
        ax.contour(a, a, L.T, levels=levels[::3], colors="white", linewidths=0.4,
                   alpha=0.6)
        ax.plot(0, 0, "w+", ms=10, mew=2)
        for x, y, style in marks:
            ax.plot(x, y, style, ms=7, mfc="none", mew=1.6)
        ax.set_title(title, color=colour)
        ax.set(xlim=span, ylim=span, aspect="equal", xlabel=xlabel)
        ax.grid(False)
    axes[0].set_ylabel(ylabel)
    fig.tight_layout()
    fig.colorbar(image, ax=list(axes), shrink=0.9, label=r"$\log_{10}\,Z/Z(0,0)$",
                 ticks=matplotlib.ticker.MaxNLocator(6, steps=[1, 2, 5, 10]))
    return fig, axes
