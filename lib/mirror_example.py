"""The three-token example of a spurious local minimum (chapter "Training the attention alone").

One sample of n = 3 one-hot tokens (X = I_3, D = 3), query/key dimension d = 1, keys
W_K = (-1, 0, 1) (token j has the key kappa_j), values v_1 = (1, h), v_2 = (-1, 0), v_3 = (1, -h)
(W_V below, W_O = I_2), and a teacher with W_Q* = t* (1, 1, 1). The query of token k is the number
w_k, so the loss separates: f(w) = sum_k phi(w_k), phi(t) = 1/2 ||g(t) - g(t*)||^2 with the row
output g(t) = weights(t) @ values. The functions here give phi and its derivative in closed form
(numpy, vectorised over t) and the same example as a ``lib.model.AttentionLayer``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from scipy.optimize import brentq

from .device import get_device
from .hessian import full_hessian
from .model import AttentionLayer, squared_loss
from .trainer import History, train
from .validation import check_choice

__all__ = ["T_STAR", "H_SKEW", "KAPPA", "W0_EX", "example_inputs", "values", "example_layer",
           "example_targets", "weights", "d_weights", "row_out", "phi", "d_phi",
           "stationary_points", "check_point", "run_example"]

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


def example_layer(kernel: str, w: Sequence[float], h: float = H_SKEW,
                  device: str | torch.device | None = None) -> AttentionLayer:
    """The example as an AttentionLayer: D = 3, d = 1, d_v = d_out = 2, W_Q = w (3 numbers),
    W_K = KAPPA, W_V = values(h), W_O = I (Gaussian bandwidth 1/(2 sqrt 1) = 1/2)."""
    check_choice(kernel, "kernel", _KERNELS)
    layer = AttentionLayer(3, d=1, d_v=2, d_out=2, kernel=kernel, seed=0, device=device)
    with torch.no_grad():
        layer.W_Q.copy_(torch.as_tensor(np.asarray(w, dtype=float)).reshape(1, 3, 1))
        layer.W_K.copy_(torch.as_tensor(KAPPA).reshape(1, 3, 1))
        layer.W_V.copy_(torch.as_tensor(values(h)).reshape(1, 3, 2))
        layer.W_O.copy_(torch.eye(2, dtype=torch.float64))
    return layer


def example_targets(kernel: str, h: float = H_SKEW, t_star: float = T_STAR,
                    device: str | torch.device | None = None) -> torch.Tensor:
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
    return 0.5 * ((row_out(kernel, t, h) - row_out(kernel, t_star, h)) ** 2).sum(axis=-1)


def d_phi(kernel: str, t, h: float = H_SKEW, t_star: float = T_STAR) -> np.ndarray:
    """phi'(t)."""
    residual = row_out(kernel, t, h) - row_out(kernel, t_star, h)
    return (residual * (d_weights(kernel, t) @ values(h))).sum(axis=-1)


def stationary_points(kernel: str, h: float = H_SKEW, t_star: float = T_STAR, lo: float = -8.0,
                      hi: float = 8.0, num: int = 1601) -> list[float]:
    """Zeros of phi' in [lo, hi], bracketed on a grid and refined by Brent's method; t* last."""
    grid = np.linspace(lo, hi, num)
    dv = d_phi(kernel, grid, h, t_star)
    roots = [brentq(lambda t: d_phi(kernel, t, h, t_star), a, b, xtol=1e-15)
             for a, b, da, db in zip(grid[:-1], grid[1:], dv[:-1], dv[1:]) if da * db < 0]
    return [r for r in roots if abs(r - t_star) > 1e-6] + [t_star]


def check_point(kernel: str, t: float, device: str | torch.device | None = None
                ) -> tuple[float, float, torch.Tensor]:
    """Loss, |gradient| and Hessian eigenvalues of the example at W_Q = (t, t*, t*), computed by the
    library (autograd and ``lib.hessian.full_hessian``)."""
    layer = example_layer(kernel, [t, T_STAR, T_STAR], device=device)
    X, Y = example_inputs(device), example_targets(kernel, device=device)
    loss = squared_loss(layer(X), Y)
    grad = torch.autograd.grad(loss, layer.W_Q)[0]
    eigs = torch.linalg.eigvalsh(full_hessian(layer, X, Y, ("W_Q",)))
    return loss.item(), grad.norm().item(), eigs


def run_example(kernel: str, w0: Sequence[float] = tuple(W0_EX), steps: int = 1000, lr: float = 4.0,
                h: float = H_SKEW, device: str | torch.device | None = None
                ) -> tuple[np.ndarray, History]:
    """GD on W_Q of the example with ``lib.trainer.train``; records (w1, w2) every 5 steps in
    ``history.diagnostics``. Returns (final W_Q as 3 numbers, history)."""
    layer = example_layer(kernel, w0, h, device)
    X, Y = example_inputs(device), example_targets(kernel, h, device=device)

    def path(state) -> dict:
        return {"w1": state.model.W_Q[0, 0, 0].item(), "w2": state.model.W_Q[0, 1, 0].item()}

    history = train(layer, X, Y, steps=steps, lr=lr, trainable=("W_Q",), callbacks=(path,),
                    callback_every=5)
    return layer.W_Q.detach().flatten().cpu().numpy(), history
