"""Summaries of the book's results over seeds: interval estimates and descriptive statistics.

* ``wilson_interval``: the Wilson score interval of a proportion (converged seeds, accuracy).
* ``median_range_by``: median, minimum and maximum of a value per group (e.g. per width ratio).
* ``mean_row_cosine``: how aligned the rows of token matrices are.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from scipy.stats import norm

from .validation import check_int, check_number

__all__ = ["wilson_interval", "median_range_by", "mean_row_cosine"]


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion ``successes / trials``: (low, high) in [0, 1].

    Unlike the normal (Wald) interval it stays inside [0, 1] and has a sensible width at 0 or
    ``trials`` successes, which is where counts of converged seeds often sit.
    """
    trials = check_int(trials, "trials", minimum=1)
    successes = check_int(successes, "successes", 0, trials)
    confidence = check_number(confidence, "confidence", 0.0, 1.0, low_open=True, high_open=True)
    z = float(norm.ppf(0.5 + confidence / 2))
    p = successes / trials
    denominator = 1 + z**2 / trials
    centre = (p + z**2 / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z**2 / (4 * trials**2)) / denominator
    low = 0.0 if successes == 0 else max(centre - half, 0.0)
    high = 1.0 if successes == trials else min(centre + half, 1.0)
    return low, high


def median_range_by(
    groups: Sequence[float], values: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per distinct group key (ascending): (keys, median, min, max) of the values in that group.

    ``groups`` and ``values``: sequences of equal, non-zero length (e.g. one entry per run).
    """
    groups, values = np.asarray(groups, dtype=float), np.asarray(values, dtype=float)
    if groups.ndim != 1 or groups.shape != values.shape or groups.size == 0:
        raise ValueError(
            f"groups and values must be 1-D of the same non-zero length, got shapes "
            f"{groups.shape} and {values.shape}"
        )
    keys = np.unique(groups)
    parts = [values[groups == key] for key in keys]
    return (keys, np.array([np.median(p) for p in parts]), np.array([p.min() for p in parts]),
            np.array([p.max() for p in parts]))


def mean_row_cosine(M: torch.Tensor) -> float:
    """Mean cosine similarity between distinct rows of each (n, D) matrix of M: (..., n, D), n >= 2,
    averaged over the matrices."""
    if not isinstance(M, torch.Tensor) or M.dim() < 2 or M.shape[-2] < 2:
        raise ValueError(f"M must be a tensor of shape (..., n, D) with n >= 2, got {getattr(M, 'shape', M)!r}")
    U = torch.nn.functional.normalize(M, dim=-1)
    n = M.shape[-2]
    return ((U @ U.transpose(-1, -2)).sum((-1, -2)) - n).mean().item() / (n * (n - 1))
