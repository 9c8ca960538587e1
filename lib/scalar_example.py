"""Scalar tokens (D = d = 1) with only W_Q trained: the problems of the attention-only
chapter's Exercise 5.1.

Every token is a number x, W_Q = w and W_K, W_V, W_O are numbers; the targets come from
a teacher that shares W_K, W_V, W_O with the student. ``scalar_loss`` gives the loss
f(w) in closed form for many w at once, ``scalar_closed_form_error`` checks it against
the library's ``AttentionLayer``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .device import get_device
from .model import AttentionLayer, squared_loss
from .validation import check_choice, check_positive_int, check_seed

__all__ = ["scalar_problem", "scalar_loss", "scalar_closed_form_error"]

_KERNELS = ("softmax", "gaussian")


def scalar_problem(
    kernel: str,
    seed: int,
    N: int = 1,
    n: int = 2,
    device: str | torch.device | None = None,
) -> tuple[AttentionLayer, torch.Tensor, torch.Tensor, float]:
    """D = d = 1: tokens X1 (N, n, 1), a student ``AttentionLayer`` (seed ``seed``) and
    the targets Y1 (N, n, 1) of a teacher (seed ``seed + 1000``) that shares W_K, W_V,
    W_O. Returns (student, X1, Y1, the teacher's w*)."""
    check_choice(kernel, "kernel", _KERNELS)
    check_seed(seed, "seed")
    check_positive_int(N, "N")
    check_positive_int(n, "n")
    device = get_device() if device is None else device
    X1 = torch.randn(N, n, 1, generator=torch.Generator().manual_seed(seed),
                     dtype=torch.float64).to(device)
    student = AttentionLayer(1, kernel=kernel, seed=seed, device=device)
    teacher = AttentionLayer(1, kernel=kernel, seed=seed + 1000, device=device)
    with torch.no_grad():
        for name in ("W_K", "W_V", "W_O"):
            getattr(teacher, name).copy_(getattr(student, name))
        Y1 = teacher(X1)
    return student, X1, Y1, teacher.W_Q.item()


def scalar_loss(
    kernel: str,
    student: AttentionLayer,
    X1: torch.Tensor,
    Y1: torch.Tensor,
    ws: Sequence[float] | np.ndarray,
) -> np.ndarray:
    """f(w) for many w at once, in closed form: row k has the weights of w x_k against
    the keys a x_j (a = W_K). X1, Y1: (N, n, 1); ws: (W,) -> (W,)."""
    check_choice(kernel, "kernel", _KERNELS)
    x = X1[..., 0].cpu().numpy()  # (N, n)
    a = student.W_K.item()
    b = (student.W_V[0] @ student.W_O).item()
    w = np.asarray(ws, dtype=float)[:, None, None, None]
    if kernel == "softmax":
        scores = w * x[None, :, :, None] * a * x[None, :, None, :]  # (W, N, n, n)
        S = np.exp(scores - scores.max(axis=-1, keepdims=True))
        S /= S.sum(axis=-1, keepdims=True)
    else:
        S = np.exp(-0.5 * (w * x[None, :, :, None] - a * x[None, :, None, :]) ** 2)
    out = (S * (b * x)[None, :, None, :]).sum(axis=-1)  # (W, N, n)
    residual = out - Y1[..., 0].cpu().numpy()[None]
    return 0.5 * (residual ** 2).sum(axis=(1, 2)) / x.shape[0]


def scalar_closed_form_error(
    kernel: str,
    student: AttentionLayer,
    X1: torch.Tensor,
    Y1: torch.Tensor,
    ws: Sequence[float] = (-3.0, 0.5, 2.0),
) -> float:
    """max |loss of ``student`` with W_Q = w - scalar_loss(w)| over ws. Sets the
    student's W_Q to each w in turn (it ends at ws[-1])."""
    err = 0.0
    for w in ws:
        with torch.no_grad():
            student.W_Q.fill_(w)
            f_layer = squared_loss(student(X1), Y1).item()
        err = max(err, abs(f_layer - scalar_loss(kernel, student, X1, Y1, [w])[0]))
    return err
