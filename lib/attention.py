"""Attention kernels: the n x n matrix S that mixes the tokens of one sequence.

Both kernels take queries ``Q`` and keys ``K`` of shape ``(..., n, d)`` and return ``S`` of shape
``(..., n, n)`` with ``S[..., k, j]`` = how much token ``k`` attends to token ``j``.

* Softmax:  S = softmax_row(Q K^T / sqrt(d)); every row sums to 1.
* Gaussian: S_kj = exp(-gamma * ||q_k - k_j||^2), gamma = 1 / (2 sqrt(d)) by default; no row
  normalisation unless ``normalize=True``. With the default gamma,
  S_kj = exp(q_k.k_j / sqrt(d)) * exp(-||q_k||^2 / (2 sqrt(d))) * exp(-||k_j||^2 / (2 sqrt(d))):
  the Softmax numerator times two norm factors.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .validation import check_choice, check_positive_float

__all__ = [
    "softmax_kernel",
    "gaussian_kernel",
    "pairwise_sq_distances",
    "default_gamma",
    "KERNELS",
    "kernel_names",
    "get_kernel",
]

Kernel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _check_qk(Q: torch.Tensor, K: torch.Tensor) -> None:
    for name, t in (("Q", Q), ("K", K)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() < 2:
            raise ValueError(f"{name} must have shape (..., n, d), got {tuple(t.shape)}")
    if Q.shape != K.shape:
        raise ValueError(f"Q and K must have the same shape (..., n, d), got {tuple(Q.shape)} and {tuple(K.shape)}")


def default_gamma(d: int) -> float:
    """The book's default Gaussian bandwidth gamma = 1 / (2 sqrt(d))."""
    return 1.0 / (2.0 * math.sqrt(d))


def softmax_kernel(Q: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Row-wise softmax of the scaled scores. Q, K: (..., n, d) -> S: (..., n, n), rows sum to 1."""
    _check_qk(Q, K)
    d = Q.shape[-1]
    scores = Q @ K.transpose(-1, -2) / math.sqrt(d)
    return torch.softmax(scores, dim=-1)


def pairwise_sq_distances(Q: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """||q_k - k_j||^2 for all pairs. Q, K: (..., n, d) -> (..., n, n).

    Uses the expansion ||a||^2 + ||b||^2 - 2 a.b (no (..., n, n, d) tensor), after subtracting a
    common centre from queries and keys. Distances are translation invariant, and centring keeps the
    norms in the expansion of the size of the point cloud, not of its offset from the origin, so
    nearby points far from the origin do not lose their distance to cancellation. The result is
    clamped at 0 and has smooth derivatives of every order (no square roots).
    """
    _check_qk(Q, K)
    centre = 0.5 * (Q.mean(dim=-2, keepdim=True) + K.mean(dim=-2, keepdim=True)).detach()
    q = Q - centre
    k = K - centre
    q_sq = (q * q).sum(-1, keepdim=True)  # (..., n, 1)
    k_sq = (k * k).sum(-1).unsqueeze(-2)  # (..., 1, n)
    return (q_sq + k_sq - 2.0 * (q @ k.transpose(-1, -2))).clamp_min(0.0)


def gaussian_kernel(
    Q: torch.Tensor, K: torch.Tensor, gamma: float | None = None, normalize: bool = False
) -> torch.Tensor:
    """Gaussian attention kernel. Q, K: (..., n, d) -> S: (..., n, n).

    S_kj = exp(-gamma * ||q_k - k_j||^2), with gamma = 1/(2 sqrt(d)) when ``gamma`` is None.
    Entries lie in (0, 1] and equal 1 where q_k = k_j. ``normalize=True`` divides each row by its
    sum (a row-stochastic variant, for comparison).
    """
    _check_qk(Q, K)
    d = Q.shape[-1]
    gamma = default_gamma(d) if gamma is None else check_positive_float(gamma, "gamma")
    logits = -gamma * pairwise_sq_distances(Q, K)
    if normalize:
        # Row normalisation of exp(logits) is a softmax of the logits: the stable form.
        return torch.softmax(logits, dim=-1)
    return torch.exp(logits)


def _gaussian_normalized(Q: torch.Tensor, K: torch.Tensor, gamma: float | None = None) -> torch.Tensor:
    return gaussian_kernel(Q, K, gamma=gamma, normalize=True)


KERNELS: dict[str, Callable[..., torch.Tensor]] = {
    "softmax": softmax_kernel,
    "gaussian": gaussian_kernel,
    "gaussian_normalized": _gaussian_normalized,
}


def kernel_names() -> list[str]:
    """The valid kernel names."""
    return list(KERNELS)


def get_kernel(name: str) -> Callable[..., torch.Tensor]:
    """Look a kernel up by name; an unknown name raises ``ValueError`` listing the valid ones."""
    if not isinstance(name, str):
        raise TypeError(f"kernel must be a name (str), one of {kernel_names()}, got {type(name).__name__}")
    check_choice(name, "kernel", kernel_names())
    return KERNELS[name]
