"""The constants of the chapter's gradient inequality for attention-only training (one
head).

For one attention row with keys K (n, d), query q and weights s (n,), the book proves
||grad phi(q)|| >= c phi(q) with

* Softmax:  c = sqrt(2) sigma_{n-1}(J),  J = (diag s - s s^T) K / sqrt(d);
* Gaussian: c = (2 / sqrt(n)) sigma_n(J),  J with rows -2 gamma s_j (q - k_j).

``row_certificates`` evaluates c for every row; ``model_certificates`` the smallest c of
every model of a batched layer (the constant of the theorem on wide problems).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from .attention import default_gamma
from .batched import BatchedAttentionLayer
from .validation import check_choice

__all__ = [
    "row_jacobian",
    "row_certificates",
    "model_certificates",
    "wide_inequality_ratios",
]


def row_jacobian(
    Q: torch.Tensor,
    K: torch.Tensor,
    S: torch.Tensor,
    kernel: str,
    gamma: float | None = None,
) -> torch.Tensor:
    """J_r = d s_r / d q_r of every row r, from the formulas. Q, K: (..., n, d), S:
    (..., n, n) -> (..., n, n, d) (row r first). Softmax: (diag s - s s^T) K / sqrt(d);
    Gaussian: rows
    -2 gamma s_j (q - k_j)."""
    check_choice(kernel, "kernel", ("softmax", "gaussian"))
    d = Q.shape[-1]
    if kernel == "softmax":
        A = torch.diag_embed(S) - S.unsqueeze(-1) * S.unsqueeze(
            -2
        )  # (..., n, n, n), row r first
        return A @ K.unsqueeze(-3) / math.sqrt(d)
    gamma = default_gamma(d) if gamma is None else gamma
    return -2 * gamma * S.unsqueeze(-1) * (Q.unsqueeze(-2) - K.unsqueeze(-3))


def row_certificates(
    Q: torch.Tensor,
    K: torch.Tensor,
    S: torch.Tensor,
    kernel: str,
    gamma: float | None = None,
) -> torch.Tensor:
    """c_r of every row r. Q, K: (..., n, d), S: (..., n, n) -> (..., n)."""
    n = Q.shape[-2]
    J = row_jacobian(Q, K, S, kernel, gamma)
    index, const = (
        (n - 2, math.sqrt(2)) if kernel == "softmax" else (n - 1, 2 / math.sqrt(n))
    )
    sv = torch.linalg.svdvals(J)
    if sv.shape[-1] <= index:
        return torch.zeros(sv.shape[:-1], dtype=sv.dtype, device=sv.device)
    return const * sv[..., index]


@torch.no_grad()
def model_certificates(model: BatchedAttentionLayer, X: torch.Tensor) -> torch.Tensor:
    """min_r c_r of every model (H = 1). X: (N, n, D) or (M, N, n, D) -> (M,)."""
    if model.H != 1:
        raise ValueError(f"model must have one head (H = 1), got H = {model.H}")
    Xb = X if X.dim() == 4 else X.expand(model.M, *X.shape)
    Q = torch.einsum("mbnD,mDd->mbnd", Xb, model.W_Q[:, 0])
    K = torch.einsum("mbnD,mDd->mbnd", Xb, model.W_K[:, 0])
    S = model.attention(Xb)[:, :, 0]
    return row_certificates(Q, K, S, model.kernel, model.gamma).amin(dim=(1, 2))


# --- the theorem's inequality measured at random weights (the chapter's check) ---


def wide_inequality_ratios(
    kernels: Sequence[str],
    sizes: Sequence[tuple[int, int, int]],
    scales: Sequence[float],
    M: int,
    generator: torch.Generator,
    device: str | torch.device | None = None,
) -> tuple[list[float], float]:
    """The ratios ||grad f|| / (sigma_min(X) c f / sqrt(N n)) of the theorem on wide
    problems, which it says are >= 1.

    For every kernel, size (N, n, D) and scale: M problems of
    ``lib.data.batched_teacher_problems`` (W_Q trained) with W_Q drawn as
    scale * N(0, 1) / sqrt(D) from ``generator`` (consumed in that order). Returns
    (all M * len(kernels) * len(sizes) * len(scales) ratios, the smallest Softmax
    constant c seen; inf if no Softmax kernel).
    """
    from .data import batched_teacher_problems

    ratios, c_soft_min = [], float("inf")
    for kernel in kernels:
        check_choice(kernel, "kernel", ("softmax", "gaussian"))
        for N, n, D in sizes:
            student, _, X, Y = batched_teacher_problems(
                kernel, N, n, D, ("W_Q",), M, device=device
            )
            sigma = torch.linalg.svdvals(X.reshape(M, N * n, D))[:, -1]
            for scale in scales:
                with torch.no_grad():
                    draw = torch.randn(student.W_Q.shape, generator=generator,
                                       dtype=torch.float64)
                    student.W_Q.copy_(scale * draw / math.sqrt(D))
                loss = 0.5 * ((student(X) - Y) ** 2).sum(dim=(1, 2, 3)) / N
                grad = torch.autograd.grad(loss.sum(), student.W_Q)[0]
                grad = grad.flatten(1).norm(dim=1)
                c = model_certificates(student, X)
                if kernel == "softmax":
                    c_soft_min = min(c_soft_min, c.min().item())
                ratios += (grad / (sigma * c * loss / math.sqrt(N * n))).tolist()
    return ratios, c_soft_min
