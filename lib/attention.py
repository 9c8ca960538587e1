"""Attention kernels: the n x n matrix S that mixes the tokens of one sequence.

Both kernels take queries ``Q`` and keys ``K`` of shape ``(..., n, d)`` and return ``S``
of shape
``(..., n, n)`` with ``S[..., k, j]`` = how much token ``k`` attends to token ``j``.

* Softmax:  S = softmax_row(Q K^T / sqrt(d)); every row sums to 1. The queries are
scaled by
  1/sqrt(d) *before* the product, so the scores overflow only if the scaled ones would.
* Gaussian: S_kj = exp(-gamma * ||q_k - k_j||^2), gamma = 1 / (2 sqrt(d)) by default; no
row
  normalisation unless ``normalize=True``. With the default gamma,
  S_kj = exp(q_k.k_j / sqrt(d)) * exp(-||q_k||^2 / (2 sqrt(d))) * exp(-||k_j||^2 / (2
  sqrt(d))): the Softmax numerator times two norm factors.

Half precision (float16, bfloat16): the kernels compute in float32 and return S in the
input's dtype (scores and squared distances overflow float16's range of 65,504 easily).
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
    "attention_matrix",
]

Kernel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _check_qk(Q: torch.Tensor, K: torch.Tensor) -> None:
    for name, t in (("Q", Q), ("K", K)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() < 2:
            raise ValueError(
                f"{name} must have shape (..., n, d), got {tuple(t.shape)}")
    if Q.shape != K.shape:
        raise ValueError(
            f"Q and K must have the same shape (..., n, d), got {tuple(Q.shape)} and"
            f" {tuple(K.shape)}"
        )


_HALF = (torch.float16, torch.bfloat16)


def _widen(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Half-precision tensors as float32 (the kernels compute in float32 and cast
    back)."""
    return tuple(t.float() if t.dtype in _HALF else t for t in tensors)


def default_gamma(d: int) -> float:
    """The book's default Gaussian bandwidth gamma = 1 / (2 sqrt(d))."""
    return 1.0 / (2.0 * math.sqrt(d))


def softmax_kernel(Q: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Row-wise softmax of the scaled scores. Q, K: (..., n, d) -> S: (..., n, n),
    rows sum to 1."""
    _check_qk(Q, K)
    dtype = Q.dtype
    Q, K = _widen(Q, K)
    scores = (Q * (1.0 / math.sqrt(Q.shape[-1]))) @ K.transpose(-1, -2)
    return torch.softmax(scores, dim=-1).to(dtype)


def pairwise_sq_distances(Q: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """||q_k - k_j||^2 for all pairs. Q, K: (..., n, d) -> (..., n, n).

    Uses the expansion ||a||^2 + ||b||^2 - 2 a.b (no (..., n, n, d) tensor), after
    subtracting a common centre from queries and keys. Distances are translation
    invariant, and centring keeps the norms in the expansion of the size of the
    point cloud, not of its offset from the origin, so nearby points far from the
    origin do not lose their distance to cancellation. The value is clamped at 0;
    the clamp is invisible to autograd, so the derivatives of every order are those
    of the smooth expression (no square roots), also where q_k = k_j (where a plain
    clamp of a rounded, slightly negative value would zero the second derivatives).
    """
    _check_qk(Q, K)
    centre = 0.5 * (
        Q.mean(dim=-2, keepdim=True) + K.mean(dim=-2, keepdim=True)).detach()
    q = Q - centre
    k = K - centre
    q_sq = (q * q).sum(-1, keepdim=True)  # (..., n, 1)
    k_sq = (k * k).sum(-1).unsqueeze(-2)  # (..., 1, n)
    raw = q_sq + k_sq - 2.0 * (q @ k.transpose(-1, -2))
    return raw + (raw.clamp_min(0.0) - raw).detach()


def gaussian_kernel(Q: torch.Tensor, K: torch.Tensor, gamma: float | None = None,
                    normalize: bool = False) -> torch.Tensor:
    """Gaussian attention kernel. Q, K: (..., n, d) -> S: (..., n, n).

    S_kj = exp(-gamma * ||q_k - k_j||^2), with gamma = 1/(2 sqrt(d)) when ``gamma``
    is None. Entries lie in (0, 1] and equal 1 where q_k = k_j. ``normalize=True``
    divides each row by its sum (a row-stochastic variant, for comparison).
    """
    _check_qk(Q, K)
    dtype = Q.dtype
    Q, K = _widen(Q, K)
    d = Q.shape[-1]
    gamma = default_gamma(d) if gamma is None else check_positive_float(gamma, "gamma")
    logits = -gamma * pairwise_sq_distances(Q, K)
    if normalize:
        # Row normalisation of exp(logits) is a softmax of the logits: the stable form.
        return torch.softmax(logits, dim=-1).to(dtype)
    return torch.exp(logits).to(dtype)


def _gaussian_normalized(Q: torch.Tensor, K: torch.Tensor,
                         gamma: float | None = None) -> torch.Tensor:
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
    """Look a kernel up by name; an unknown name raises ``ValueError`` listing the
    valid ones."""
    if not isinstance(name, str):
        raise TypeError(
            f"kernel must be a name (str), one of {kernel_names()}, got"
            f" {type(name).__name__}"
        )
    check_choice(name, "kernel", kernel_names())
    return KERNELS[name]


def attention_matrix(
    Q: torch.Tensor,
    K: torch.Tensor,
    kernel: str,
    *,
    gamma: float | None = None,
    key_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The kernel ``kernel`` applied to Q, K: (..., n, d), with an optional key
    padding mask.

    ``key_mask``: bool, shape (..., n) with leading axes broadcastable to those of Q
    (e.g. (B, 1, n) for Q: (B, H, n, d)); True marks a real token, False a padding
    token. Masked keys get weight 0:

    * "softmax": their scores are set to -inf before the row softmax, so each row
    sums to 1 over the
      real keys. A row with no real key (an all-padding sequence) is all zeros, not NaN.
    * "gaussian": S is multiplied by the mask. The distances are computed after
    subtracting the
      mean of the *real* queries and keys (padding does not move the centre), so
      appending padding changes nothing but the masked entries.
    * "gaussian_normalized": the masked Gaussian row divided by its sum over the
    real keys.

    ``gamma`` is the Gaussian bandwidth (default 1/(2 sqrt(d))); the Softmax kernel
    ignores it. Without a mask the result is exactly that of ``get_kernel(kernel)``.
    Returns S: (..., n, n).
    """
    fn = get_kernel(kernel)
    if key_mask is None:
        return fn(Q, K) if kernel == "softmax" else fn(Q, K, gamma=gamma)
    _check_qk(Q, K)
    if Q.dtype in _HALF or K.dtype in _HALF:
        return attention_matrix(*_widen(Q, K), kernel, gamma=gamma,
                                key_mask=key_mask).to(Q.dtype)
    n, d = Q.shape[-2], Q.shape[-1]
    if not isinstance(key_mask, torch.Tensor) or key_mask.dtype != torch.bool:
        got = key_mask.dtype if isinstance(key_mask,
                                           torch.Tensor) else type(key_mask).__name__
        raise TypeError(
            f"key_mask must be a bool tensor (True = real token), got {got}")
    if key_mask.dim() < 1 or key_mask.shape[-1] != n:
        raise ValueError(
            f"key_mask must have shape (..., n) with n = {n} keys, got"
            f" {tuple(key_mask.shape)}"
        )
    try:
        torch.broadcast_shapes(key_mask.shape[:-1], Q.shape[:-2])
    except RuntimeError:
        raise ValueError(
            f"key_mask's leading axes {tuple(key_mask.shape[:-1])} do not broadcast to"
            f" Q's {tuple(Q.shape[:-2])}"
        ) from None
    if key_mask.device != Q.device:
        raise ValueError(f"key_mask is on {key_mask.device} but Q is on {Q.device}")
    keys = key_mask.unsqueeze(-2)  # (..., 1, n): masks columns
    has_key = key_mask.any(dim=-1, keepdim=True).unsqueeze(-1)  # (..., 1, 1)
    # Scalings are applied to the (n, d) factors, not to the (n, n) products:
    # fewer passes over S.
    if kernel == "softmax":
        logits = (Q * (1.0 / math.sqrt(d))) @ K.transpose(-1, -2)
    else:
        gamma = default_gamma(d) if gamma is None else check_positive_float(
            gamma, "gamma")
        # Centre on the real tokens (distances are translation invariant; see
        # pairwise_sq_distances).
        w = key_mask.unsqueeze(-1).to(Q.dtype)  # (..., n, 1)
        count = w.sum(dim=-2, keepdim=True).clamp_min(1.0)
        centre = (0.5 * ((Q * w).sum(dim=-2, keepdim=True) +
                         (K * w).sum(dim=-2, keepdim=True)) / count).detach()
        q, k = Q - centre, K - centre
        q_sq = gamma * (q * q).sum(-1, keepdim=True)  # (..., n, 1)
        k_sq = gamma * (k * k).sum(-1).unsqueeze(-2)  # (..., 1, n)
        # -gamma ||q - k||^2 = 2 gamma q.k - gamma ||q||^2 - gamma ||k||^2, at most 0.
        logits = ((q *
                   (2.0 * gamma)) @ k.transpose(-1, -2) - q_sq - k_sq).clamp_max(0.0)
        if kernel == "gaussian":
            return torch.exp(logits.masked_fill(~keys, float("-inf")))
    # Row-normalised kernels. A sequence without any real key keeps all keys for
    # the softmax (no
    # 0/0 and no NaN in the backward pass), then the mask zeroes its row.
    if bool(has_key.all()):
        return torch.softmax(logits.masked_fill(~keys, float("-inf")), dim=-1)
    allowed = keys | ~has_key
    S = torch.softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1)
    return S * keys.to(S.dtype)
