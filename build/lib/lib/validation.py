"""Argument checks shared by the library: every bad input gets a clear error naming the argument."""
from __future__ import annotations

import math
from typing import Sequence

import torch

__all__ = [
    "check_tensor",
    "check_positive_int",
    "check_positive_float",
    "check_finite",
    "check_choice",
]


def check_positive_int(value: object, name: str) -> int:
    """Return ``value`` as an int, or raise if it is not a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive integer, got {value!r} ({type(value).__name__})")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return value


def check_positive_float(value: object, name: str) -> float:
    """Return ``value`` as a float, or raise if it is not a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a positive number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def check_finite(x: torch.Tensor, name: str) -> torch.Tensor:
    """Raise if ``x`` contains NaN or infinity."""
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} must contain only finite values, found {bad} NaN/inf entries")
    return x


def check_tensor(
    x: object,
    name: str,
    ndim: int | Sequence[int] | None = None,
    shape: Sequence[int | None] | None = None,
    finite: bool = True,
) -> torch.Tensor:
    """Check that ``x`` is a floating tensor of the given rank and shape (``None`` = any size).

    Example: ``check_tensor(X, "X", shape=(None, None, D))`` for X: (N, n, D).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if shape is not None:
        ndim = len(shape)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.dim() not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{name} must have {want} dimensions, got shape {tuple(x.shape)}")
    if shape is not None:
        for axis, (got, want) in enumerate(zip(x.shape, shape)):
            if want is not None and got != want:
                expected = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
                raise ValueError(
                    f"{name} must have shape {expected}, got {tuple(x.shape)} (axis {axis}: {got} != {want})"
                )
    if finite:
        check_finite(x, name)
    return x


def check_choice(value: str, name: str, choices: Sequence[str]) -> str:
    """Raise ``ValueError`` listing the valid choices if ``value`` is not one of them."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(repr(c) for c in choices)}")
    return value
