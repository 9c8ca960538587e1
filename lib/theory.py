"""Diagnostics of the theory: the matrix B, lambda_B, the W_V-only problem and its
linear rate.

With the attention matrices S_i^h fixed, the layer is linear in the value weights:

    stacked predictions (N*n, d_out) = B @ V,
    B (N*n, H*D): row block i = [S_i^1 X_i, ..., S_i^H X_i],
    V (H*D, d_out) = [W_V^1 W_O^1; ...; W_V^H W_O^H]   (W_O^h: the h-th row block of
    W_O).

Training W_V alone is therefore the least-squares problem f(w) = 1/(2N) ||J w - y||^2
with w = vec(W_V), y = vec(Y) and J the (N*n*d_out, H*D*d_v) Jacobian; J J^T = sum_h
(B_h B_h^T) kron (W_O^h^T W_O^h), where B_h = the h-th column block of B. See the
chapter "Wide embeddings" for the derivation of the constants below.

For a ``lib.batched.BatchedAttentionLayer`` of M models, ``batched_b_matrix``,
``batched_gram_extremes`` and ``sigma_min_wo`` give the same quantities model by model,
and
``ValueModes`` is the closed form of GD on W_V alone (a sum of decaying eigenmodes).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .batched_model import BatchedAttentionLayer
from .gradients import loss_and_gradients
from .model import AttentionLayer, squared_loss
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
    "batched_b_matrix",
    "batched_gram_extremes",
    "sigma_min_wo",
    "ValueModes",
    "pl_ratio",
    "notation_shapes",
]


def _check(model: AttentionLayer, X: torch.Tensor) -> None:
    if not isinstance(model, AttentionLayer):
        raise TypeError(
            f"model must be a lib.model.AttentionLayer, got {type(model).__name__}")
    check_tensor(X, "X", shape=(None, None, model.D))


@torch.no_grad()
def b_matrix(model: AttentionLayer, X: torch.Tensor) -> torch.Tensor:
    """B: (N*n, H*D), row block i = [S_i^1 X_i, ..., S_i^H X_i]. X: (N, n, D)."""
    _check(model, X)
    return _stack_heads(model.attention(X) @ X.unsqueeze(1))  # S X: (N, H, n, D)


def _stack_heads(SX: torch.Tensor) -> torch.Tensor:
    """(..., N, H, n, D) -> (..., N*n, H*D): row block i = [S_i^1 X_i, ..., S_i^H
    X_i]."""
    *lead, N, H, n, D = SX.shape
    return SX.transpose(-3, -2).reshape(*lead, N * n, H * D)


@torch.no_grad()
def lambda_b(model: AttentionLayer, X: torch.Tensor) -> float:
    """lambda_B = lambda_min(B B^T): > 0 exactly when B has full row rank N*n (needs
    H*D >= N*n)."""
    B = b_matrix(model, X)
    return float(torch.linalg.eigvalsh(B @ B.T)[0].clamp_min(0.0))


@torch.no_grad()
def value_output_product(model: AttentionLayer) -> torch.Tensor:
    """V = [W_V^1 W_O^1; ...; W_V^H W_O^H]: (H*D, d_out), so that predictions = B @
    V."""
    if not isinstance(model, AttentionLayer):
        raise TypeError(
            f"model must be a lib.model.AttentionLayer, got {type(model).__name__}")
    model._check_weights()
    W_O = model.W_O.reshape(model.H, model.d_v, model.d_out)
    return (model.W_V @ W_O).reshape(model.H * model.D, model.d_out)


@torch.no_grad()
def values_jacobian(model: AttentionLayer, X: torch.Tensor) -> torch.Tensor:
    """J: (N*n*d_out, H*D*d_v), the Jacobian of vec(predictions) in vec(W_V)
    (row-major vec).

    Column block h is kron(B_h, W_O^h^T): d pred[r, c] / d W_V^h[a, b] = B_h[r, a]
    W_O^h[b, c].
    """
    B = b_matrix(model, X)
    blocks_B = B.reshape(B.shape[0], model.H, model.D).unbind(1)
    blocks_O = model.W_O.reshape(model.H, model.d_v, model.d_out).unbind(0)
    return torch.cat([
        torch.kron(Bh.contiguous(), Oh.T.contiguous())
        for Bh, Oh in zip(blocks_B, blocks_O)
    ], dim=1)


@dataclass
class RateBound:
    """Constants of the W_V-only problem and the linear rate they predict for GD
    with step size lr.

    mu: PL constant, the smallest non-zero eigenvalue of J J^T / N (J^T J / N
    restricted to its range).
    mu_lower: the lower bound lambda_B * min_h sigma_min(W_O^h)^2 / N (valid when B
    has full row rank).
    L: smoothness constant, lambda_max(J^T J) / N.
    rate: the guaranteed per-step factor 1 - 2 mu lr (1 - L lr / 2) of the
    optimality gap
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
        """Steps the bound needs to shrink the optimality gap by ``ratio`` (e.g.
        1e-6)."""
        if not 0 < self.rate < 1:
            return float("inf")
        return math.log(ratio) / math.log(self.rate)


@torch.no_grad()
def predicted_rate(model: AttentionLayer, X: torch.Tensor, lr: float,
                   rank_tol: float = 1e-10) -> RateBound:
    """The linear rate of GD on W_V alone, from the PL (mu) and smoothness (L)
    constants.

    For f with an L-Lipschitz gradient satisfying ||grad f||^2 >= 2 mu (f - f*), one
    GD step gives f(t+1) - f* <= (1 - 2 mu lr (1 - L lr / 2)) (f(t) - f*) (Karimi et
    al., 2016); with lr <= 1/L this is at most 1 - mu lr.
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
    sigma = sigma_min_wo(model)
    rate = 1.0 - 2.0 * mu * lr * (1.0 - L * lr / 2.0)
    return RateBound(mu, lam_b * sigma**2 / N, L, lr, rate, lam_b, sigma, full_rank)


@dataclass
class ValueOptimum:
    """The global optimum of the W_V-only problem: W_V* (H, D, d_v) (minimum norm)
    and f* = f(W_V*)."""

    W_V: torch.Tensor
    loss: float


@torch.no_grad()
def optimal_values(model: AttentionLayer, X: torch.Tensor,
                   Y: torch.Tensor) -> ValueOptimum:
    """Closed-form least-squares optimum of f over W_V with W_Q, W_K, W_O fixed. Y:
    (N, n, d_out)."""
    _check(model, X)
    check_tensor(Y, "Y", shape=(X.shape[0], X.shape[1], model.d_out))
    J = values_jacobian(model, X).to(torch.float64)
    y = Y.reshape(-1).to(torch.float64)
    w = torch.linalg.pinv(J) @ y
    W_V = w.reshape(model.H, model.D, model.d_v).to(model.W_V.dtype)
    residual = J @ w - y
    return ValueOptimum(W_V, float(0.5 * (residual @ residual) / X.shape[0]))


# ------------------------------------------------------------ every model of a
# batched layer
def _check_batched(model: BatchedAttentionLayer) -> None:
    if not isinstance(model, BatchedAttentionLayer):
        raise TypeError(
            "model must be a lib.batched.BatchedAttentionLayer, got"
            f" {type(model).__name__}"
        )


@torch.no_grad()
def batched_b_matrix(model: BatchedAttentionLayer, X: torch.Tensor) -> torch.Tensor:
    """B of every model: (M, N*n, H*D); entry m equals ``b_matrix(model.layer(m),
    X_m)``.

    X: (N, n, D) shared or (M, N, n, D) one per model.
    """
    _check_batched(model)
    S = model.attention(X)  # (M, N, H, n, n)
    return _stack_heads(S @ (X.unsqueeze(2) if X.dim() == 4 else X[None, :, None]))


@torch.no_grad()
def batched_gram_extremes(model: BatchedAttentionLayer,
                          X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(lambda_min, lambda_max) of B B^T for every model, two (M,) tensors;
    lambda_min is
    ``lambda_b`` (clamped at 0)."""
    B = batched_b_matrix(model, X)
    eig = torch.linalg.eigvalsh(B @ B.transpose(1, 2))
    return eig[:, 0].clamp_min(0.0), eig[:, -1]


@torch.no_grad()
def sigma_min_wo(model: AttentionLayer | BatchedAttentionLayer) -> float | torch.Tensor:
    """sigma = min_h sigma_{d_out}(W_O^h), the smallest d_out-th singular value of
    the row blocks W_O^h (d_v, d_out) of W_O; 0 when d_out > d_v. A float for one
    layer, (M,) for a batched one."""
    if isinstance(model, BatchedAttentionLayer):
        W_O = model.W_O.reshape(model.M, model.H, model.d_v, model.d_out)
    elif isinstance(model, AttentionLayer):
        model._check_weights()
        W_O = model.W_O.reshape(1, model.H, model.d_v, model.d_out)
    else:
        raise TypeError(
            "model must be an AttentionLayer or BatchedAttentionLayer, got"
            f" {type(model).__name__}"
        )
    if model.d_out > model.d_v:
        sigma = torch.zeros(W_O.shape[0], dtype=torch.float64, device=W_O.device)
    else:
        sigma = torch.linalg.svdvals(W_O.to(torch.float64))[..., -1].amin(dim=1)
    return sigma if isinstance(model, BatchedAttentionLayer) else float(sigma[0])


class ValueModes:
    """Closed form of GD on W_V alone (W_Q, W_K, W_O fixed): the loss is a sum of
    decaying modes.

    With K = J J^T / N (J = ``values_jacobian``) = U diag(lambda_i) U^T and c = U^T
    r_0 (r_0 the initial residuals, vectorised), GD with step size lr gives

        f(t) = f* + sum_{lambda_i > 0} (1 - lr lambda_i)^(2t) c_i^2 / (2N),

    f* = the part of the residual in the zero modes. Attributes: ``lam`` and ``c2``
    (numpy arrays over the positive modes, ascending lam), ``f_star``, ``mu``
    (smallest positive lam), ``L`` (largest), ``N``. Modes with lam <= rank_tol * L
    count as zero.
    """

    @torch.no_grad()
    def __init__(self, model: AttentionLayer, X: torch.Tensor, Y: torch.Tensor,
                 rank_tol: float = 1e-10) -> None:
        _check(model, X)
        check_tensor(Y, "Y", shape=(X.shape[0], X.shape[1], model.d_out))
        rank_tol = check_positive_float(rank_tol, "rank_tol")
        self.N = X.shape[0]
        J = values_jacobian(model, X).to(torch.float64)
        lam, U = torch.linalg.eigh(J @ J.T / self.N)
        c = U.T @ (model(X) - Y).reshape(-1).to(torch.float64)
        positive = lam > rank_tol * lam[-1]
        self.lam, self.c2 = lam[positive].cpu().numpy(), (c[positive]**2).cpu().numpy()
        self.f_star = float((c[~positive] ** 2).sum()) / (2 * self.N)
        self.mu, self.L = float(self.lam[0]), float(self.lam[-1])

    def gap(self, lr: float, t: int | np.ndarray) -> float | np.ndarray:
        """f(t) - f* after t steps of GD with step size lr (t: int or array of ints)."""
        t = np.asarray(t, dtype=float)[..., None]
        return np.sum((1 - lr * self.lam) ** (2 * t) * self.c2, axis=-1) / (2 * self.N)

    def loss(self, lr: float, t: int | np.ndarray) -> float | np.ndarray:
        """f(t) = f* + gap(lr, t)."""
        return self.f_star + self.gap(lr, t)

    def worst_factor(self, lr: float, present: float = 1e-24) -> float:
        """Limit of the per-step factors g(t+1)/g(t): max (1 - lr lam_i)^2 over
        the modes present in r_0 (c_i^2 > present * sum c^2)."""
        on = self.c2 > present * self.c2.sum()
        return float(np.max((1 - lr * self.lam[on]) ** 2))

    def steps_to(self, lr: float, tol: float) -> int | float:
        """Smallest t with f(t) - f* <= tol (bisection; the gap never increases
        for lr <= 1/L);
        ``math.inf`` beyond 1e13 steps."""
        if self.gap(lr, 0) <= tol:
            return 0
        hi = 1
        while self.gap(lr, hi) > tol:
            hi *= 2
            if hi > 1e13:
                return math.inf
        lo = hi // 2  # gap(lo) > tol >= gap(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if self.gap(lr, mid) > tol else (lo, mid)
        return hi


def pl_ratio(model: AttentionLayer, X: torch.Tensor, Y: torch.Tensor, W_V: torch.Tensor,
             f_star: float) -> float:
    """||grad_{W_V} f||^2 / (2 (f - f*)) at the value weights W_V (the other weights
    as in
    ``model``, which is not modified). The PL inequality of the W_V-only problem
    says this is >= mu (``predicted_rate(...).mu``) wherever f > f*."""
    loss, grads = loss_and_gradients(model, X, Y, "W_V", at={"W_V": W_V})
    return float((grads["W_V"] ** 2).sum()) / (2 * (loss - f_star))


# --- the shapes of the notation table (preface) -------------------------------------


@torch.no_grad()
def notation_shapes(
    model: AttentionLayer, X: torch.Tensor, Y: torch.Tensor
) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """{expression: (shape the notation table states, shape computed)} for the weights,
    the kernel matrices, the output, B and the loss of ``model`` on X: (N, n, D) with
    targets Y: (N, n, d_out). The table's shapes use N, n from X and H, D, d, d_v,
    d_out from the model; check the result with ``lib.validation.check_shapes``."""
    _check(model, X)
    N, n = X.shape[:2]
    H, D, d, d_v, d_out = model.H, model.D, model.d, model.d_v, model.d_out
    return {
        "model.W_Q": ((H, D, d), tuple(model.W_Q.shape)),
        "model.W_K": ((H, D, d), tuple(model.W_K.shape)),
        "model.W_V": ((H, D, d_v), tuple(model.W_V.shape)),
        "model.W_O": ((H * d_v, d_out), tuple(model.W_O.shape)),
        "model.attention(X)": ((N, H, n, n), tuple(model.attention(X).shape)),
        "model(X)": ((N, n, d_out), tuple(model(X).shape)),
        "b_matrix(model, X)": ((N * n, H * D), tuple(b_matrix(model, X).shape)),
        "squared_loss(model(X), Y)": ((), tuple(squared_loss(model(X), Y).shape)),
    }
