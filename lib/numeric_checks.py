"""Numerical identity checks that say what they compared: one printed line per check,
and an ``AssertionError`` naming the check that missed its tolerance.

    check_max_diff({"row sums vs 1": (S.sum(-1), 1.0),
                    "layer vs kernel": (layer.attention(X)[0, 0], S)}, tol=1e-12)

prints ``row sums vs 1: max |difference| = 2.2e-16 (tolerance 1e-12)`` for each entry.
"""
from __future__ import annotations

import math
from typing import Mapping, Union

import numpy as np
import torch

from .validation import check_positive_float

__all__ = ["max_abs_diff", "check_max_diff"]

Comparable = Union[torch.Tensor, np.ndarray, float, int]


def max_abs_diff(a: Comparable, b: Comparable) -> float:
    """max |a - b| over all entries (a, b broadcast against each other; tensors are
    detached). NaN anywhere gives NaN."""
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(float(a) - float(b))
    a_t = a.detach().cpu() if isinstance(a, torch.Tensor) else torch.as_tensor(a)
    b_t = b.detach().cpu() if isinstance(b, torch.Tensor) else torch.as_tensor(b)
    dtype = torch.promote_types(a_t.dtype, b_t.dtype)
    if not dtype.is_floating_point:
        dtype = torch.float64
    diff = (a_t.to(dtype) - b_t.to(dtype)).abs()
    if diff.numel() == 0:
        raise ValueError("max_abs_diff: the arguments have no entries to compare")
    return float(diff.max()) if not diff.isnan().any() else math.nan


def check_max_diff(
    pairs: Mapping[str, tuple[Comparable, Comparable] | float],
    tol: float = 1e-12,
    verbose: bool = True,
) -> None:
    """Check max |a - b| < tol for every ``label: (a, b)`` (or ``label: error``, an
    already computed max |difference|).

    Prints one line per label (when ``verbose``), then raises an ``AssertionError``
    listing every label whose difference is not below ``tol`` (NaN fails).
    """
    tol = check_positive_float(tol, "tol")
    if not isinstance(pairs, Mapping) or not pairs:
        raise ValueError(
            f"pairs must be a non-empty mapping label -> (a, b), got {pairs!r}")
    errors = {}
    for label, pair in pairs.items():
        if isinstance(pair, tuple):
            if len(pair) != 2:
                raise ValueError(f"pairs[{label!r}] must be (a, b) or a number")
            errors[label] = max_abs_diff(*pair)
        else:
            errors[label] = float(pair)
        if verbose:
            print(
                f"{label}: max |difference| = {errors[label]:.1e} (tolerance {tol:g})")
    failed = {k: v for k, v in errors.items() if not v < tol}
    if failed:
        raise AssertionError(
            "max |difference| not below the tolerance " + f"{tol:g}: " +
            ", ".join(f"{k} ({v:.2e})" for k, v in failed.items()))
