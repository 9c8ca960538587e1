"""The three-token example of a spurious local minimum (chapter "Training the attention
alone").

One sample of n = 3 one-hot tokens (X = I_3, D = 3), query/key dimension d = 1, keys
W_K = (-1, 0, 1) (token j has the key kappa_j), values v_1 = (1, h), v_2 = (-1, 0), v_3
= (1, -h) (W_V below, W_O = I_2), and a teacher with W_Q* = t* (1, 1, 1). The query of
token k is the number w_k, so the loss separates: f(w) = sum_k phi(w_k), phi(t) = 1/2
||g(t) - g(t*)||^2 with the row output g(t) = weights(t) @ values. The functions here
give phi and its derivative in closed form (numpy, vectorised over t) and the same
example as a ``lib.model.AttentionLayer``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from scipy.optimize import brentq

from .device import get_device
from .hessian import full_hessian
from .model import AttentionLayer, squared_loss
from .trainer import History, train
from .validation import check_choice

__all__ = [
    "T_STAR",
    "H_SKEW",
    "KAPPA",
    "W0_EX",
    "example_inputs",
    "values",
    "example_layer",
    "example_targets",
    "weights",
    "d_weights",
    "row_out",
    "phi",
    "d_phi",
    "stationary_points",
    "check_point",
    "run_example",
    "plot_example_curves",
    "plot_example_landscape",
    "separable_loss_error",
    "trap_leading_value",
    "point_kind",
    "spurious_minima",
    "explore_slice",
    "explore_slice_widgets",
    "two_dim_layer",
]

T_STAR, H_SKEW = 1.5, 0.2
KAPPA = np.array([-1.0, 0.0, 1.0])  # the keys of the three tokens
W0_EX = [-2.5, 0.5, T_STAR]  # a start whose first query lies in the basin of the trap
_KERNELS = ("softmax", "gaussian")


def example_inputs(device: str | torch.device | None = None) -> torch.Tensor:
    """X = I_3 as one sample: (1, 3, 3)."""
    device = get_device() if device is None else device
    return torch.eye(3, dtype=torch.float64, device=device).unsqueeze(0)


def values(h: float = H_SKEW) -> np.ndarray:
    """The value rows v_1, v_2, v_3: (3, 2)."""
    return np.array([[1.0, h], [-1.0, 0.0], [1.0, -h]])


def example_layer(
    kernel: str,
    w: Sequence[float],
    h: float = H_SKEW,
    device: str | torch.device | None = None,
) -> AttentionLayer:
    """The example as an AttentionLayer: D = 3, d = 1, d_v = d_out = 2, W_Q = w (3
    numbers),
    W_K = KAPPA, W_V = values(h), W_O = I (Gaussian bandwidth 1/(2 sqrt 1) = 1/2)."""
    check_choice(kernel, "kernel", _KERNELS)
    layer = AttentionLayer(3, d=1, d_v=2, d_out=2, kernel=kernel, seed=0, device=device)
    with torch.no_grad():
        layer.W_Q.copy_(torch.as_tensor(np.asarray(w, dtype=float)).reshape(1, 3, 1))
        layer.W_K.copy_(torch.as_tensor(KAPPA).reshape(1, 3, 1))
        layer.W_V.copy_(torch.as_tensor(values(h)).reshape(1, 3, 2))
        layer.W_O.copy_(torch.eye(2, dtype=torch.float64))
    return layer


def example_targets(
    kernel: str,
    h: float = H_SKEW,
    t_star: float = T_STAR,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """The teacher's outputs (1, 3, 2) for W_Q* = t* (1, 1, 1)."""
    with torch.no_grad():
        return example_layer(kernel, [t_star] * 3, h, device)(example_inputs(device))


def weights(kernel: str, t: np.ndarray | float) -> np.ndarray:
    """Row weights of a token with query t: (..., 3)."""
    t = np.asarray(t, dtype=float)[..., None]
    if kernel == "softmax":
        z = t * KAPPA
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    return np.exp(-0.5 * (t - KAPPA) ** 2)


def d_weights(kernel: str, t: np.ndarray | float) -> np.ndarray:
    """Derivative of the row weights in t: (..., 3)."""
    p = weights(kernel, t)
    t = np.asarray(t, dtype=float)[..., None]
    if kernel == "softmax":
        return p * (KAPPA - (p * KAPPA).sum(axis=-1, keepdims=True))
    return -(t - KAPPA) * p


def row_out(kernel: str, t: np.ndarray | float, h: float = H_SKEW) -> np.ndarray:
    """The row output g(t) = weights(t) @ values(h): (..., 2)."""
    return weights(kernel, t) @ values(h)


def phi(kernel: str, t, h: float = H_SKEW, t_star: float = T_STAR) -> np.ndarray:
    """The row loss phi(t) = 1/2 ||g(t) - g(t*)||^2."""
    return 0.5 * ((row_out(kernel, t, h) - row_out(kernel, t_star, h)) ** 2).sum(
        axis=-1
    )


def d_phi(kernel: str, t, h: float = H_SKEW, t_star: float = T_STAR) -> np.ndarray:
    """phi'(t)."""
    residual = row_out(kernel, t, h) - row_out(kernel, t_star, h)
    return (residual * (d_weights(kernel, t) @ values(h))).sum(axis=-1)


def stationary_points(
    kernel: str,
    h: float = H_SKEW,
    t_star: float = T_STAR,
    lo: float = -8.0,
    hi: float = 8.0,
    num: int = 1601,
) -> list[float]:
    """Zeros of phi' in [lo, hi], bracketed on a grid and refined by Brent's method; t*
    last."""
    grid = np.linspace(lo, hi, num)
    dv = d_phi(kernel, grid, h, t_star)
    roots = [
        brentq(lambda t: d_phi(kernel, t, h, t_star), a, b, xtol=1e-15)
        for a, b, da, db in zip(grid[:-1], grid[1:], dv[:-1], dv[1:])
        if da * db < 0
    ]
    return [r for r in roots if abs(r - t_star) > 1e-6] + [t_star]


def check_point(
    kernel: str, t: float, device: str | torch.device | None = None
) -> tuple[float, float, torch.Tensor]:
    """Loss, |gradient| and Hessian eigenvalues of the example at W_Q = (t, t*, t*),
    computed by the
    library (autograd and ``lib.hessian.full_hessian``)."""
    layer = example_layer(kernel, [t, T_STAR, T_STAR], device=device)
    X, Y = example_inputs(device), example_targets(kernel, device=device)
    loss = squared_loss(layer(X), Y)
    grad = torch.autograd.grad(loss, layer.W_Q)[0]
    eigs = torch.linalg.eigvalsh(full_hessian(layer, X, Y, ("W_Q",)))
    return loss.item(), grad.norm().item(), eigs


def run_example(
    kernel: str,
    w0: Sequence[float] = tuple(W0_EX),
    steps: int = 1000,
    lr: float = 4.0,
    h: float = H_SKEW,
    device: str | torch.device | None = None,
) -> tuple[np.ndarray, History]:
    """GD on W_Q of the example with ``lib.trainer.train``; records (w1, w2) every 5
    steps in
    ``history.diagnostics``. Returns (final W_Q as 3 numbers, history)."""
    layer = example_layer(kernel, w0, h, device)
    X, Y = example_inputs(device), example_targets(kernel, h, device=device)

    def path(state) -> dict:
        return {
            "w1": state.model.W_Q[0, 0, 0].item(),
            "w2": state.model.W_Q[0, 1, 0].item(),
        }

    history = train(
        layer,
        X,
        Y,
        steps=steps,
        lr=lr,
        trainable=("W_Q",),
        callbacks=(path,),
        callback_every=5,
    )
    return layer.W_Q.detach().flatten().cpu().numpy(), history


def plot_example_curves(traps: dict):
    """Left: the curve of row outputs g(t) per kernel, with the teacher's output (star),
    the output at the trap (dot) and the values v_1, v_3; right: the row loss phi.
    traps: {kernel: t_h}.
    """
    from .plotting import KERNEL_COLORS, KERNEL_LABELS, new_figure

    fig, axes = new_figure(2, 1, width=4.6, height=3.6)
    ts = np.linspace(-6, 6, 1201)
    for kernel, t_h in traps.items():
        c, name = KERNEL_COLORS[kernel], KERNEL_LABELS[kernel]
        curve = row_out(kernel, ts)
        axes[0].plot(
            curve[:, 0], curve[:, 1], color=c, lw=1.8, label=f"{name}: row output g(t)"
        )
        target, trap = row_out(kernel, T_STAR), row_out(kernel, t_h)
        axes[0].plot(*target, marker="*", ms=13, color=c, mec="black", ls="none")
        axes[0].plot(*trap, marker="o", ms=7, color=c, mec="black", ls="none")
        axes[0].annotate(
            "", xy=trap, xytext=target, arrowprops=dict(arrowstyle="<->", color=c, lw=1)
        )
        axes[1].plot(ts, phi(kernel, ts), color=c, lw=1.8, label=name)
        axes[1].plot(t_h, phi(kernel, t_h), "o", color=c, mec="black", ms=7)
        axes[1].plot(T_STAR, 0, "*", color=c, mec="black", ms=13)
    axes[0].plot(
        *values()[[0, 2]].T, "s", color="gray", ms=6, label="values $v_1$, $v_3$"
    )
    axes[0].set(
        xlabel="first output coordinate",
        ylabel="second output coordinate",
        title="outputs a query can reach",
    )
    axes[0].legend(fontsize=8, loc="center right")
    axes[1].set(
        xlabel="query $t$ of one token",
        ylabel=r"row loss $\varphi(t)$",
        title=r"$\varphi$: global minimum (star) and trap (dot)",
    )
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_example_landscape(W1: np.ndarray, W2: np.ndarray, traps: dict, paths: dict):
    """log10 f(w_1, w_2, t*) on the grid (W1, W2) per kernel, with the global minimum,
    the three traps and GD paths. traps: {kernel: t_h}; paths: {kernel: {name: (start,
    history)}} with the
    (w1, w2) path in ``history.diagnostics``."""
    from .plotting import KERNEL_COLORS, KERNEL_LABELS, new_figure

    fig, axes = new_figure(2, 1, width=4.4, height=4.0)
    for ax, (kernel, t_h) in zip(axes, traps.items()):
        color = KERNEL_COLORS[kernel]
        F = phi(kernel, W1) + phi(kernel, W2)
        cs = ax.contourf(
            W1,
            W2,
            np.log10(np.maximum(F, 1e-4)),
            levels=np.linspace(-4, -0.25, 31),
            cmap="viridis",
        )
        ax.plot(
            T_STAR,
            T_STAR,
            "*",
            ms=15,
            color="gold",
            mec="black",
            label="global minimum (f = 0)",
        )
        ax.plot(
            [t_h, T_STAR, t_h],
            [T_STAR, t_h, t_h],
            "o",
            ms=8,
            color=color,
            mec="white",
            label="traps (local minima, f > 0)",
        )
        for name, ((a, b), history) in paths[kernel].items():
            path = np.array([history.diagnostics["w1"], history.diagnostics["w2"]])
            ax.plot(path[0], path[1], "-", color="white", lw=2.4)
            ax.plot(path[0], path[1], "-", color=color, lw=1.4)
            ax.plot(a, b, "s", color="white", mec="black", ms=6)
            ax.annotate(
                f"start {name}",
                (a, b),
                textcoords="offset points",
                xytext=(6, 6),
                fontsize=8,
                bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.85),
            )
        ax.set(
            title=f"{KERNEL_LABELS[kernel]}: $\\log_{{10}} f(w_1, w_2, t^\\star)$",
            xlabel="$w_1$ (query of token 1)",
            ylabel="$w_2$ (query of token 2)",
        )
        ax.grid(False)
        ax.legend(fontsize=7, loc="lower right", framealpha=0.9, frameon=True)
    fig.colorbar(cs, ax=axes, fraction=0.03, pad=0.02, label=r"$\log_{10} f$")
    return fig


# --- helpers of the chapter's cells: checks, counts, the explorer, Exercise 5.2 ---


def separable_loss_error(
    kernel: str, ws: np.ndarray, device: str | torch.device | None = None
) -> float:
    """max |loss of the example's AttentionLayer - sum_k phi(w_k)| over the rows of ws:
    (P, 3) query vectors W_Q (the separable form of the loss, checked)."""
    check_choice(kernel, "kernel", _KERNELS)
    ws = np.asarray(ws, dtype=float)
    if ws.ndim != 2 or ws.shape[1] != 3:
        raise ValueError(f"ws must have shape (P, 3), got {ws.shape}")
    X, Y = example_inputs(device), example_targets(kernel, device=device)
    err = 0.0
    for w in ws:
        with torch.no_grad():
            f_model = squared_loss(example_layer(kernel, w, device=device)(X), Y).item()
        err = max(err, abs(f_model - float(phi(kernel, w).sum())))
    return err


def trap_leading_value(h: float = H_SKEW, t_star: float = T_STAR) -> float:
    """The leading-order loss of the Softmax trap, 2 h^2 y_1(t*)^2 with
    y_1(t) = -2 sinh t / (2 cosh t + 1)."""
    return 2 * h**2 * (2 * math.sinh(t_star) / (2 * math.cosh(t_star) + 1)) ** 2


def point_kind(f: float, eigs: torch.Tensor | np.ndarray) -> str:
    """The kind of a stationary point from its loss f and Hessian eigenvalues eigs:
    "global minimum" (f < 1e-20), "local minimum" (all eigs > 0) or "saddle (local
    max of phi)"."""
    eigs = torch.as_tensor(eigs)
    if f < 1e-20:
        return "global minimum"
    return "local minimum" if eigs.min() > 0 else "saddle (local max of phi)"


def spurious_minima(kernel: str, h: float = H_SKEW) -> list[float]:
    """The non-global local minima of phi in [-8, 8]: stationary points with phi >
    1e-12 where phi' changes sign from - to +."""
    return [
        t
        for t in stationary_points(kernel, h=h)
        if phi(kernel, t, h=h) > 1e-12
        and d_phi(kernel, t + 1e-4, h=h) > 0 > d_phi(kernel, t - 1e-4, h=h)
    ]


def explore_slice(
    kernel: str = "softmax",
    h: float = H_SKEW,
    t_star: float = T_STAR,
    w1_start: float = -2.5,
    w2_start: float = 0.5,
):
    """The explorer's figure: log10 f(w_1, w_2, t*) = log10(phi(w_1) + phi(w_2)) on a
    241 x 241 grid of [-4, 4]^2 with the global minimum and the path of plain GD on the
    closed form (step size 2, 4000 steps) from (w1_start, w2_start). Returns the
    figure."""
    from .plotting import KERNEL_COLORS, KERNEL_LABELS, new_figure

    check_choice(kernel, "kernel", _KERNELS)
    W1, W2 = np.meshgrid(np.linspace(-4, 4, 241), np.linspace(-4, 4, 241))
    F = phi(kernel, W1, h, t_star) + phi(kernel, W2, h, t_star)
    path = np.empty((4001, 2))
    path[0] = (w1_start, w2_start)
    for step in range(4000):
        path[step + 1] = path[step] - 2.0 * d_phi(kernel, path[step], h, t_star)
    fig, ax = new_figure(1, 1, width=5.0, height=4.2)
    cs = ax.contourf(W1, W2, np.log10(np.maximum(F, 1e-4)),
                     levels=np.linspace(-4, 0.25, 35), cmap="viridis")
    fig.colorbar(cs, ax=ax, label=r"$\log_{10} f$")
    ax.plot(t_star, t_star, "*", ms=15, color="gold", mec="black")
    ax.plot(path[:, 0], path[:, 1], "-", color="white", lw=2.4)
    ax.plot(path[:, 0], path[:, 1], "-", color=KERNEL_COLORS[kernel], lw=1.4)
    end = path[-1]
    f_end = phi(kernel, end, h, t_star).sum()
    ax.set_title(f"{KERNEL_LABELS[kernel]}: GD ends at ({end[0]:.2f}, {end[1]:.2f}), "
                 f"f = {f_end:.2e}", fontsize=9)
    ax.set_xlabel("$w_1$")
    ax.set_ylabel("$w_2$")
    ax.grid(False)
    return fig


def explore_slice_widgets() -> dict:
    """The live explorer's controls, one ``ipywidgets`` control per argument of
    ``explore_slice``: {keyword: widget} for ``lib.explorer.live_explorer``."""
    import ipywidgets as widgets

    from .plotting import KERNEL_LABELS

    def slider(value, low, high, step, description):
        return widgets.FloatSlider(value=value, min=low, max=high, step=step,
                                   description=description)

    return {
        "kernel": widgets.Dropdown(options=[(KERNEL_LABELS[k], k) for k in _KERNELS],
                                   value="softmax"),
        "h": slider(H_SKEW, 0.0, 0.8, 0.05, "skew h"),
        "t_star": slider(T_STAR, 0.5, 3.0, 0.1, "teacher t*"),
        "w1_start": slider(-2.5, -4.0, 4.0, 0.1, "start w1"),
        "w2_start": slider(0.5, -4.0, 4.0, 0.1, "start w2"),
    }


def two_dim_layer(
    eps: float, W_Q: Sequence[Sequence[float]], device: str | torch.device | None = None
) -> AttentionLayer:
    """The example with a second query/key coordinate (d = 2, Softmax): keys
    sqrt(2) ((-1, 0), (0, eps), (1, 0)), the same values, W_O = I_2 and W_Q: (3, 2)."""
    W_Q = torch.as_tensor(np.asarray(W_Q, dtype=float))
    if W_Q.shape != (3, 2):
        raise ValueError(f"W_Q must have shape (3, 2), got {tuple(W_Q.shape)}")
    layer = AttentionLayer(3, d=2, d_v=2, d_out=2, kernel="softmax", seed=0,
                           device=device)
    keys = torch.tensor([[-1.0, 0.0], [0.0, eps], [1.0, 0.0]], dtype=torch.float64)
    with torch.no_grad():
        layer.W_K.copy_(math.sqrt(2) * keys.unsqueeze(0))
        layer.W_V.copy_(torch.as_tensor(values()).unsqueeze(0))
        layer.W_O.copy_(torch.eye(2, dtype=torch.float64))
        layer.W_Q.copy_(W_Q.reshape(1, 3, 2))
    return layer
