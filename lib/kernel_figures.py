"""The figures of the kernels chapter: tokens beside their kernel matrices, the
temperature / bandwidth sweep, attention outputs against the convex hull of the
values, and the explorer's figure. Each function returns the figure; the caller
shows it.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from .attention import default_gamma, gaussian_kernel, softmax_kernel
from .plotting import KERNEL_COLORS, KERNEL_LABELS, new_figure, plot_kernel_matrix
from .tokens import make_tokens
from .validation import check_tensor

__all__ = ["plot_tokens_and_kernels", "plot_scale_sweep", "plot_outputs_and_hull",
           "kernel_explorer_figure"]


def _numpy(x) -> np.ndarray:
    return np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=float)


def plot_tokens_and_kernels(tokens: torch.Tensor, matrices: Mapping[str, torch.Tensor],
                            title: str = "tokens", numbered: bool = False,
                            width: float = 3.5, height: float = 3.1) -> Figure:
    """Tokens in the plane (left) beside kernel matrices, one panel each.

    tokens: (n, 2); matrices: {panel title: (n, n) kernel matrix}, each with its own
    colour bar; ``numbered`` writes each token's index beside it.
    """
    check_tensor(tokens, "tokens", shape=(None, 2))
    if not matrices:
        raise ValueError("matrices must hold at least one (n, n) kernel matrix")
    fig, axes = new_figure(ncols=1 + len(matrices), width=width, height=height)
    points = _numpy(tokens)
    axes[0].scatter(points[:, 0], points[:, 1], c="0.35", s=22 if numbered else 18)
    if numbered:
        for j, (x, y) in enumerate(points.tolist()):
            axes[0].annotate(str(j), (x, y), textcoords="offset points", xytext=(3, 3),
                             fontsize=7)
        axes[0].set_xlabel("$x_1$")
        axes[0].set_ylabel("$x_2$")
    axes[0].set_aspect("equal", adjustable="datalim" if numbered else "box")
    axes[0].set_title(title)
    for ax, (name, S) in zip(axes[1:], matrices.items()):
        plot_kernel_matrix(ax, S, name)
        ax.set_xticks(range(0, len(points), 2))
        ax.set_yticks(range(0, len(points), 2))
    fig.tight_layout()
    return fig


def plot_scale_sweep(sweep: Mapping[float, Sequence[torch.Tensor]],
                     kernels: Sequence[str] = ("softmax", "gaussian")) -> Figure:
    """Kernel matrices for several scales on one colour scale from 0 to 1.

    sweep: {scale c: (S of kernels[0], S of kernels[1], ...)}, each (n, n); one
    column per scale, one row per kernel, one shared colour bar.
    """
    if not sweep:
        raise ValueError("sweep must hold at least one scale")
    fig, axes = new_figure(ncols=len(sweep), nrows=len(kernels), width=2.15, height=2.2,
                           squeeze=False)
    for col, (c, matrices) in enumerate(sweep.items()):
        if len(matrices) != len(kernels):
            raise ValueError(f"sweep[{c!r}] must hold one matrix per kernel {kernels}")
        for row, (kernel, S) in enumerate(zip(kernels, matrices)):
            ax = plot_kernel_matrix(axes[row, col], S, "", vmax=1.0, cbar=False)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel("key j" if row == len(kernels) - 1 else "")
            ax.set_ylabel(f"{KERNEL_LABELS[kernel]}\nquery k" if col == 0 else "",
                          color=KERNEL_COLORS[kernel])
            if row == 0:
                ax.set_title(f"scale c = {c:g}")
    fig.colorbar(axes[0, 0].images[0], ax=axes, fraction=0.02, pad=0.02)
    return fig


def plot_outputs_and_hull(values: torch.Tensor, outputs: Mapping[str, torch.Tensor],
                          far: int = 0, zoom: tuple[float, float, float, float] = (
                              -3.5, 3.5, -1.0, 4.5)) -> Figure:
    """Attention outputs against the convex hull of the values, in the plane.

    values: (n, 2); outputs: {kernel: (n, 2) outputs o_k}. Left: everything; right:
    the window ``zoom`` = (x0, x1, y0, y1), with the Gaussian output of query ``far``
    marked.
    """
    from scipy.spatial import ConvexHull

    check_tensor(values, "values", shape=(None, 2))
    V = _numpy(values)
    ring = ConvexHull(V).vertices
    markers = {"softmax": ("s", 30), "gaussian": ("^", 34)}
    fig, axes = new_figure(ncols=2, width=4.3, height=4.0)
    for ax, title in zip(axes,
                         ["all outputs", "zoom on the convex hull and the origin"]):
        ax.fill(V[ring, 0], V[ring, 1], color="0.85", zorder=0,
                label="convex hull of the values")
        ax.scatter(V[:, 0], V[:, 1], c="0.35", s=14, label="values $v_j$", zorder=2)
        for kernel, O in outputs.items():
            O = _numpy(O)
            marker, size = markers.get(kernel, ("o", 30))
            ax.scatter(O[:, 0], O[:, 1], c=KERNEL_COLORS[kernel], s=size, marker=marker,
                       label=f"{KERNEL_LABELS[kernel]} outputs $o_k$", zorder=3)
        ax.axhline(0, color="0.6", lw=0.6)
        ax.axvline(0, color="0.6", lw=0.6)
        ax.set_xlabel("output coordinate 1")
        ax.set_ylabel("output coordinate 2")
        ax.set_title(title)
    axes[0].set_aspect("equal", adjustable="datalim")
    axes[1].set_xlim(*zoom[:2])
    axes[1].set_ylim(*zoom[2:])
    axes[1].set_aspect("equal", adjustable="box")
    if "gaussian" in outputs:
        axes[1].annotate(f"Gaussian output of\nthe far query {far}",
                         _numpy(outputs["gaussian"])[far].tolist(), xytext=(0.6, 1.0),
                         fontsize=8, arrowprops=dict(arrowstyle="->", color="0.3"))
    axes[0].legend(loc="center left", fontsize=8, frameon=True, framealpha=1.0)
    fig.tight_layout()
    return fig


def kernel_explorer_figure(scale: float = 1.0, gamma_factor: float = 1.0,
                           separation: float = 3.0,
                           geometry: str = "two clusters") -> Figure:
    """Tokens of ``make_tokens(geometry, separation)`` and their Softmax and Gaussian
    matrices with W_Q = W_K = scale * I and gamma = gamma_factor * gamma_0 (d = 2)."""
    tokens = make_tokens(geometry, separation)
    Qw = Kw = scale * tokens
    gamma = gamma_factor * default_gamma(2)
    return plot_tokens_and_kernels(tokens, {
        f"Softmax, temperature {1 / scale**2:.3g}": softmax_kernel(Qw, Kw),
        f"Gaussian, bandwidth {gamma * scale**2:.3g}": gaussian_kernel(Qw, Kw,
                                                                      gamma=gamma),
    }, width=3.3, height=3.0)
