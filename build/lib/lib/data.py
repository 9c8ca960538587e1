"""Seeded synthetic regression problems for the theory chapters.

* ``random_inputs``: token matrices X: (N, n, D) with i.i.d. N(0, scale^2) entries.
* ``teacher_problem``: targets Y = teacher(X) from an attention layer of a given kernel, so the
  global optimum of a student with the same architecture is zero loss (the targets are realisable).
* ``random_problem``: i.i.d. Gaussian targets, in general not realisable.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .device import get_device
from .model import AttentionLayer
from .validation import check_positive_float, check_positive_int

__all__ = ["random_inputs", "random_targets", "RegressionProblem", "teacher_problem", "random_problem"]


def _generator(seed: int) -> torch.Generator:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return torch.Generator().manual_seed(seed)


def random_inputs(
    N: int,
    n: int,
    D: int,
    *,
    seed: int = 0,
    scale: float = 1.0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """X: (N, n, D) with i.i.d. N(0, scale^2) entries, drawn from a local generator."""
    for name, value in (("N", N), ("n", n), ("D", D)):
        check_positive_int(value, name)
    check_positive_float(scale, "scale")
    X = torch.randn(N, n, D, generator=_generator(seed), dtype=torch.float64) * scale
    return X.to(dtype=dtype, device=get_device() if device is None else device)


def random_targets(
    N: int,
    n: int,
    d_out: int,
    *,
    seed: int = 0,
    scale: float = 1.0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Y: (N, n, d_out) with i.i.d. N(0, scale^2) entries."""
    return random_inputs(N, n, d_out, seed=seed, scale=scale, dtype=dtype, device=device)


@dataclass
class RegressionProblem:
    """A synthetic problem: X (N, n, D), Y (N, n, d_out), and the teacher that made Y (if any)."""

    X: torch.Tensor
    Y: torch.Tensor
    teacher: AttentionLayer | None
    realisable: bool

    @property
    def shape(self) -> dict[str, int]:
        N, n, D = self.X.shape
        return {"N": N, "n": n, "D": D, "d_out": self.Y.shape[-1]}


def teacher_problem(
    N: int,
    n: int,
    D: int,
    *,
    kernel: str = "softmax",
    H: int = 1,
    d: int | None = None,
    d_v: int | None = None,
    d_out: int | None = None,
    seed: int = 0,
    teacher_seed: int | None = None,
    input_scale: float = 1.0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    **teacher_kwargs,
) -> RegressionProblem:
    """Inputs from ``seed`` and targets Y = teacher(X) from a teacher layer (seed ``teacher_seed``,
    default seed + 1) with the given kernel and sizes; extra keyword arguments go to the teacher."""
    X = random_inputs(N, n, D, seed=seed, scale=input_scale, dtype=dtype, device=device)
    teacher = AttentionLayer(
        D, H=H, d=d, d_v=d_v, d_out=d_out, kernel=kernel, seed=seed + 1 if teacher_seed is None else teacher_seed,
        dtype=dtype, device=X.device, **teacher_kwargs,
    )
    with torch.no_grad():
        Y = teacher(X)
    return RegressionProblem(X, Y, teacher, realisable=True)


def random_problem(
    N: int,
    n: int,
    D: int,
    *,
    d_out: int | None = None,
    seed: int = 0,
    input_scale: float = 1.0,
    target_scale: float = 1.0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> RegressionProblem:
    """Inputs and i.i.d. Gaussian targets (seed + 1), in general not realisable."""
    X = random_inputs(N, n, D, seed=seed, scale=input_scale, dtype=dtype, device=device)
    Y = random_targets(N, n, D if d_out is None else d_out, seed=seed + 1, scale=target_scale, dtype=dtype, device=X.device)
    return RegressionProblem(X, Y, None, realisable=False)
