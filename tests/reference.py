"""Plain reference implementations of the book's formulas, written independently of
``lib``.

Everything here loops over samples, heads and token pairs and spells the formulas out
(explicit exp / sum for the Softmax, explicit ||q_k - k_j||^2 for the Gaussian), so that
the vectorised library code can be compared against the definitions. Only tiny sizes are
meant to go through it.

Also shared helpers for the unit tests (plain functions, no fixtures).
"""
from __future__ import annotations

import math

import numpy as np
import torch

#: The unit tests run on the CPU, whatever ``lib.get_device()`` would pick.
DEVICE = torch.device("cpu")
F64 = torch.float64


def randn(*shape: int, seed: int = 0, scale: float = 1.0,
          dtype: torch.dtype = F64) -> torch.Tensor:
    """A seeded standard normal tensor on the test device."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(
        dtype=dtype, device=DEVICE)


# ------------------------------------------------------------------------- kernels
def ref_softmax_kernel(Q: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Q, K: (n, d) -> S (n, n), S_kj = exp(q_k.k_j/sqrt d) / sum_l exp(q_k.k_l/sqrt
    d)."""
    n, d = Q.shape
    S = torch.zeros(n, n, dtype=F64)
    for k in range(n):
        scores = [
            float(sum(Q[k, a] * K[j, a] for a in range(d))) / math.sqrt(d)
            for j in range(n)
        ]
        top = max(
            scores)  # subtracting the row maximum changes nothing but avoids overflow
        numerators = [math.exp(s - top) for s in scores]
        total = sum(numerators)
        for j in range(n):
            S[k, j] = numerators[j] / total
    return S


def ref_sq_distances(Q: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Q, K: (n, d) -> (n, n) with entries sum_a (q_k[a] - k_j[a])^2, one pair at a
    time."""
    n, d = Q.shape
    out = torch.zeros(n, n, dtype=F64)
    for k in range(n):
        for j in range(n):
            out[k, j] = sum((float(Q[k, a]) - float(K[j, a])) ** 2 for a in range(d))
    return out


def ref_gaussian_kernel(Q: torch.Tensor, K: torch.Tensor, gamma: float | None = None,
                        normalize: bool = False) -> torch.Tensor:
    """Q, K: (n, d) -> S (n, n), S_kj = exp(-gamma ||q_k - k_j||^2), gamma = 1/(2
    sqrt d) by default."""
    n, d = Q.shape
    g = 1.0 / (2.0 * math.sqrt(d)) if gamma is None else gamma
    dist = ref_sq_distances(Q, K)
    S = torch.zeros(n, n, dtype=F64)
    for k in range(n):
        for j in range(n):
            S[k, j] = math.exp(-g * float(dist[k, j]))
        if normalize:
            row_sum = sum(float(S[k, j]) for j in range(n))
            for j in range(n):
                S[k, j] = S[k, j] / row_sum
    return S


def ref_kernel(name: str, Q: torch.Tensor, K: torch.Tensor,
               gamma: float | None = None) -> torch.Tensor:
    if name == "softmax":
        return ref_softmax_kernel(Q, K)
    if name == "gaussian":
        return ref_gaussian_kernel(Q, K, gamma)
    if name == "gaussian_normalized":
        return ref_gaussian_kernel(Q, K, gamma, normalize=True)
    raise ValueError(name)


# -------------------------------------------------------------------------- model
def weights_of(model) -> dict[str, torch.Tensor]:
    """Detached float64 CPU copies of W_Q, W_K, W_V, W_O."""
    return {
        name: getattr(model, name).detach().to(dtype=F64, device="cpu").clone()
        for name in ("W_Q", "W_K", "W_V", "W_O")
    }


def ref_attention(X: torch.Tensor, W: dict, kernel: str,
                  gamma: float | None = None) -> torch.Tensor:
    """X: (N, n, D) -> S: (N, H, n, n), looping over samples i and heads h."""
    X = X.detach().to(F64)
    N, n, _ = X.shape
    H = W["W_Q"].shape[0]
    S = torch.zeros(N, H, n, n, dtype=F64)
    for i in range(N):
        for h in range(H):
            Q = X[i] @ W["W_Q"][h]  # (n, d)
            K = X[i] @ W["W_K"][h]
            S[i, h] = ref_kernel(kernel, Q, K, gamma)
    return S


def ref_heads(X: torch.Tensor, W: dict, kernel: str,
              gamma: float | None = None) -> torch.Tensor:
    """X: (N, n, D) -> head outputs S_i^h X_i W_V^h: (N, H, n, d_v)."""
    X = X.detach().to(F64)
    S = ref_attention(X, W, kernel, gamma)
    N, H, n, _ = S.shape
    d_v = W["W_V"].shape[-1]
    out = torch.zeros(N, H, n, d_v, dtype=F64)
    for i in range(N):
        for h in range(H):
            out[i, h] = S[i, h] @ (X[i] @ W["W_V"][h])
    return out


def ref_forward(X: torch.Tensor, W: dict, kernel: str,
                gamma: float | None = None) -> torch.Tensor:
    """MH(X_i) = Concat(head_1, ..., head_H) W_O for every sample: (N, n, d_out)."""
    heads = ref_heads(X, W, kernel, gamma)
    N, H, n, _ = heads.shape
    out = []
    for i in range(N):
        concat = torch.cat([heads[i, h] for h in range(H)], dim=1)  # (n, H*d_v)
        out.append(concat @ W["W_O"])
    return torch.stack(out)


def ref_squared_loss(prediction: torch.Tensor, Y: torch.Tensor) -> float:
    """1/(2N) sum_i ||prediction_i - Y_i||_F^2, entry by entry."""
    P = prediction.detach().to(F64)
    T = Y.detach().to(F64)
    N = P.shape[0]
    total = 0.0
    for i in range(N):
        for r in range(P.shape[1]):
            for c in range(P.shape[2]):
                total += (float(P[i, r, c]) - float(T[i, r, c])) ** 2
    return total / (2 * N)


def ref_b_matrix(X: torch.Tensor, W: dict, kernel: str,
                 gamma: float | None = None) -> torch.Tensor:
    """B: (N*n, H*D), row block i = [S_i^1 X_i, ..., S_i^H X_i]."""
    X = X.detach().to(F64)
    S = ref_attention(X, W, kernel, gamma)
    N, H, n, _ = S.shape
    rows = []
    for i in range(N):
        rows.append(torch.cat([S[i, h] @ X[i] for h in range(H)], dim=1))
    return torch.cat(rows, dim=0)


def ref_lambda_min(B: torch.Tensor) -> float:
    """Smallest eigenvalue of B B^T, computed with NumPy."""
    A = B.detach().cpu().numpy().astype(np.float64)
    return float(np.linalg.eigvalsh(A @ A.T)[0])
