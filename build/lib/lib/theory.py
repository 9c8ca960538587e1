"""Diagnostics of the theory: the matrix B, lambda_B, the W_V-only problem and its linear rate.

With the attention matrices S_i^h fixed, the layer is linear in the value weights:

    stacked predictions (N*n, d_out) = B @ V,
    B (N*n, H*D): row block i = [S_i^1 X_i, ..., S_i^H X_i],
    V (H*D, d_out) = [W_V^1 W_O^1; ...; W_V^H W_O^H]   (W_O^h: the h-th row block of W_O).

Training W_V alone is therefore the least-squares problem f(w) = 1/(2N) ||J w - y||^2 with
w = vec(W_V), y = vec(Y) and J the (N*n*d_out, H*D*d_v) Jacobian; J J^T = sum_h (B_h B_h^T) kron
(W_O^h^T W_O^h), where B_h = the h-th column block of B. See the chapter "Wide embeddings" for the
derivation of the constants below.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .model import AttentionLayer
from .validation import check_positive_float, check_tensor

__all__ = [
    "b_matrix",
    "lambda_b",
    "value_output_product",
    "values_jacobian",
    "RateBound",
    "predicted_rate",
    "ValueOptimum",
    "optimal_values",
]


def _check(model: AttentionLayer, X: torch.Tensor) -> None:
    if not isinstance(model, AttentionLayer):
        raise TypeError(f"model must be a lib.model.AttentionLayer, got {type(model).__name__}")
    check_tensor(X, "X", shape=(None, None, model.D))


@torch.no_grad()
def b_matrix(model: AttentionLayer, X: torch.Tensor) -> torch.Tensor:
    """B: (N*n, H*D), row block i = [S_i^1 X_i, ..., S_i^H X_i]. X: (N, n, D)."""
    _check(model, X)
    S = model.attention(X)  # (N, H, n, n)
    SX = S @ X.unsqueeze(1)  # (N, H, n, D)
    N, H, n, D = SX.shape
    return SX.permute(0, 2, 1, 3).reshape(N * n, H * D)


@torch.no_grad()
def lambda_b(model: AttentionLayer, X: torch.Tensor) -> float:
    """lambda_B = lambda_min(B B^T): > 0 exactly when B has full row rank N*n (needs H*D >= N*n)."""
    B = b_matrix(model, X)
    return float(torch.linalg.eigvalsh(B @ B.T)[0].clamp_min(0.0))


@torch.no_grad()
def value_output_product(model: AttentionLayer) -> torch.Tensor:
    """V = [W_V^1 W_O^1; ...; W_V^H W_O^H]: (H*D, d_out), so that predictions = B @ V."""
    if not isinstance(model, AttentionLayer):
        raise TypeError(f"model must be a lib.model.AttentionLayer, got {type(model).__name__}")
    model._check_weights()
    W_O = model.W_O.reshape(model.H, model.d_v, model.d_out)
    return (model.W_V @ W_O).reshape(model.H * model.D, model.d_out)


@torch.no_grad()
def values_jacobian(model: AttentionLayer, X: torch.Tensor) -> torch.Tensor:
    """J: (N*n*d_out, H*D*d_v), the Jacobian of vec(predictions) in vec(W_V) (row-major vec).

    Column block h is kron(B_h, W_O^h^T): d pred[r, c] / d W_V^h[a, b] = B_h[r, a] W_O^h[b, c].
    """
    B = b_matrix(model, X)
    blocks_B = B.reshape(B.shape[0], model.H, model.D).unbind(1)
    blocks_O = model.W_O.reshape(model.H, model.d_v, model.d_out).unbind(0)
    return torch.cat([torch.kron(Bh.contiguous(), Oh.T.contiguous()) for Bh, Oh in zip(blocks_B, blocks_O)], dim=1)


@dataclass
class RateBound:
    """Constants of the W_V-only problem and the linear rate they predict for GD with step size lr.

    mu: PL constant, the smallest non-zero eigenvalue of J J^T / N (J^T J / N restricted to its range).
    mu_lower: the lower bound lambda_B * min_h sigma_min(W_O^h)^2 / N (valid when B has full row rank).
    L: smoothness constant, lambda_max(J^T J) / N.
    rate: the guaranteed per-step factor 1 - 2 mu lr (1 - L lr / 2) of the optimality gap
        f(t+1) - f* <= rate * (f(t) - f*); < 1 exactly when 0 < lr < 2/L.
    full_rank: J has full row rank (then f* = 0 for every target).
    """

    mu: float
    mu_lower: float
    L: float
    lr: float
    rate: float
    lambda_b: float
    sigma_min_wo: float
    full_rank: bool

    @property
    def max_lr(self) -> float:
        """The step-size condition: the bound contracts for 0 < lr < 2 / L."""
        return 2.0 / self.L

    def steps_to(self, ratio: float) -> float:
        """Steps the bound needs to shrink the optimality gap by ``ratio`` (e.g. 1e-6)."""
        import math

        if not 0 < self.rate < 1:
            return float("inf")
        return math.log(ratio) / math.log(self.rate)


@torch.no_grad()
def predicted_rate(model: AttentionLayer, X: torch.Tensor, lr: float, rank_tol: float = 1e-10) -> RateBound:
    """The linear rate of GD on W_V alone, from the PL (mu) and smoothness (L) constants.

    For f with an L-Lipschitz gradient satisfying ||grad f||^2 >= 2 mu (f - f*), one GD step gives
    f(t+1) - f* <= (1 - 2 mu lr (1 - L lr / 2)) (f(t) - f*) (Karimi et al., 2016); with lr <= 1/L
    this is at most 1 - mu lr.
    """
    lr = check_positive_float(lr, "lr")
    _check(model, X)
    N = X.shape[0]
    J = values_jacobian(model, X).to(torch.float64)
    eig = torch.linalg.eigvalsh(J @ J.T) / N
    L = float(eig[-1])
    positive = eig[eig > rank_tol * max(L, 1e-300)]
    mu = float(positive[0]) if len(positive) else 0.0
    full_rank = len(positive) == len(eig)
    lam_b = lambda_b(model, X)
    W_O = model.W_O.reshape(model.H, model.d_v, model.d_out).to(torch.float64)
    sigma = min(float(torch.linalg.svdvals(W_O[h])[-1]) if model.d_out <= model.d_v else 0.0 for h in range(model.H))
    rate = 1.0 - 2.0 * mu * lr * (1.0 - L * lr / 2.0)
    return RateBound(mu, lam_b * sigma**2 / N, L, lr, rate, lam_b, sigma, full_rank)


@dataclass
class ValueOptimum:
    """The global optimum of the W_V-only problem: W_V* (H, D, d_v) (minimum norm) and f* = f(W_V*)."""

    W_V: torch.Tensor
    loss: float


@torch.no_grad()
def optimal_values(model: AttentionLayer, X: torch.Tensor, Y: torch.Tensor) -> ValueOptimum:
    """Closed-form least-squares optimum of f over W_V with W_Q, W_K, W_O fixed. Y: (N, n, d_out)."""
    _check(model, X)
    check_tensor(Y, "Y", shape=(X.shape[0], X.shape[1], model.d_out))
    J = values_jacobian(model, X).to(torch.float64)
    y = Y.reshape(-1).to(torch.float64)
    w = torch.linalg.pinv(J) @ y
    W_V = w.reshape(model.H, model.D, model.d_v).to(model.W_V.dtype)
    residual = J @ w - y
    return ValueOptimum(W_V, float(0.5 * (residual @ residual) / X.shape[0]))
