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

import torch

from .attention import default_gamma
from .batched import BatchedAttentionLayer
from .validation import check_choice

__all__ = ["row_jacobian", "row_certificates", "model_certificates"]


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
