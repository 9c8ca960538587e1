"""What a kernel matrix is made of: the factors that link the Gaussian kernel to the
Softmax, row statistics (sums, entropies, weight on a group), and convex-hull
membership of attention outputs.

    Z, a, b = link_factors(Q, K)     # S_G = S_SM * Z * a * b  (default bandwidth)
    sums, H = row_stats(S)           # (n,), (n,)
    inside_hull(S @ V, V)            # (n,) bool: is each output a convex combination?
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import torch

from .tables import Table
from .validation import check_tensor

__all__ = ["link_factors", "row_stats", "row_stats_table", "group_share", "inside_hull"]


def link_factors(Q: torch.Tensor, K: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The factors of S_G = diag(Z * a) S_SM diag(b) for the default bandwidth
    gamma_0 = 1/(2 sqrt d).

    Q: (n, d) queries, K: (m, d) keys. Returns Z: (n, 1) the Softmax row normalisers
    sum_j exp(q_k . k_j / sqrt d), a: (n, 1) = exp(-|q_k|^2 / (2 sqrt d)) and
    b: (1, m) = exp(-|k_j|^2 / (2 sqrt d)).
    """
    check_tensor(Q, "Q", ndim=2)
    check_tensor(K, "K", ndim=2)
    if Q.shape[1] != K.shape[1]:
        raise ValueError(f"Q and K must have the same width d, got shapes "
                         f"{tuple(Q.shape)} and {tuple(K.shape)}")
    r = math.sqrt(Q.shape[-1])
    Z = torch.exp(Q @ K.T / r).sum(-1, keepdim=True)
    a = torch.exp(-(Q * Q).sum(-1, keepdim=True) / (2 * r))
    b = torch.exp(-(K * K).sum(-1) / (2 * r)).unsqueeze(0)
    return Z, a, b


def row_stats(S: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row sums (n,) of a positive kernel matrix S: (n, m) and the entropies (n,) of its
    rows divided by their sums, H_k = -sum_j p_kj log p_kj (at most log m; exp(H_k) is
    the effective number of keys)."""
    check_tensor(S, "S", ndim=2)
    if not (S > 0).all():
        raise ValueError("S must have positive entries (a Softmax or Gaussian kernel)")
    p = S / S.sum(-1, keepdim=True)
    return S.sum(-1), -(p * p.log()).sum(-1)


def row_stats_table(kernels: Mapping[str, torch.Tensor]) -> Table:
    """A table of row sums (min, max), mean entropy and mean effective number of keys
    for each named kernel matrix (n, n), with the uniform distribution as last row."""
    if not kernels:
        raise ValueError("kernels must name at least one kernel matrix")
    rows = []
    for name, S in kernels.items():
        sums, H = row_stats(S)
        rows.append([name, f"{sums.min().item():.3f}", f"{sums.max().item():.3f}",
                     f"{H.mean().item():.3f}", f"{H.exp().mean().item():.2f}"])
    n = S.shape[-1]
    rows.append(["uniform", "", "", f"{math.log(n):.3f}", f"{n:.2f}"])
    return Table(["kernel", "row sum min", "row sum max", "entropy (mean)",
                  "effective keys"], rows)


def group_share(S: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Share of each row's weight on the keys of the query's own group.

    S: (n, n) non-negative; groups: (n,) integer group labels of the tokens. Returns
    (n,) values in [0, 1].
    """
    check_tensor(S, "S", ndim=2)
    groups = torch.as_tensor(groups)
    if groups.shape != (S.shape[0],) or S.shape[0] != S.shape[1]:
        raise ValueError(f"S must be (n, n) and groups (n,), got shapes "
                         f"{tuple(S.shape)} and {tuple(groups.shape)}")
    same = (groups[:, None] == groups[None, :]).to(S.dtype)
    return (S * same).sum(-1) / S.sum(-1)


def inside_hull(points: torch.Tensor | np.ndarray,
                vertices: torch.Tensor | np.ndarray) -> np.ndarray:
    """Whether each point lies in the convex hull of ``vertices`` (exact test by a
    Delaunay triangulation). points: (m, k), vertices: (n, k) with n > k and the
    vertices not all in one hyperplane. Returns (m,) bool."""
    from scipy.spatial import Delaunay

    points = np.asarray(points.detach().cpu() if hasattr(points, "detach") else points,
                        dtype=float)
    vertices = np.asarray(
        vertices.detach().cpu() if hasattr(vertices, "detach") else vertices,
        dtype=float)
    if points.ndim != 2 or vertices.ndim != 2 or points.shape[1] != vertices.shape[1]:
        raise ValueError(f"points must be (m, k) and vertices (n, k), got shapes "
                         f"{points.shape} and {vertices.shape}")
    return Delaunay(vertices).find_simplex(points) >= 0
