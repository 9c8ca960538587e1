"""Seeded arrangements of tokens in the plane, for looking at attention kernels.

``make_tokens("two clusters", separation=3.0)`` returns the twelve tokens of the kernels
chapter: (n, 2), float64, the same for the same arguments.
"""
from __future__ import annotations

import math

import torch

from .validation import check_choice, check_positive_int

__all__ = ["GEOMETRIES", "make_tokens"]

GEOMETRIES = ("two clusters", "three clusters", "ring", "random")


def make_tokens(geometry: str = "two clusters", separation: float = 3.0, n: int = 12,
                seed: int = 0) -> torch.Tensor:
    """n tokens in the plane, (n, 2) float64, in a fixed, seeded arrangement.

    "two clusters" / "three clusters": tokens split evenly (in order) between
    cluster centres
    ``separation`` apart, with noise of standard deviation 0.4; "ring": a circle of
    diameter
    ``separation``; "random": standard normal points scaled by ``separation / 2``.
    """
    check_choice(geometry, "geometry", GEOMETRIES)
    check_positive_int(n, "n")
    if isinstance(separation, bool) or not isinstance(separation, (int, float)) \
            or not math.isfinite(separation) or separation < 0:
        raise ValueError(f"separation must be a finite number >= 0, got {separation!r}")
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    if geometry in ("two clusters", "three clusters"):
        m = 2 if geometry == "two clusters" else 3
        angles = torch.arange(m, dtype=torch.float64) * 2 * math.pi / m
        radius = separation / (2 * math.sin(math.pi / m)
                               )  # neighbouring centres this far apart
        centres = radius * torch.stack([angles.cos(), angles.sin()], 1)
        return centres[torch.arange(n) * m // n] + 0.4 * noise
    if geometry == "ring":
        t = torch.arange(n, dtype=torch.float64) * 2 * math.pi / n
        return separation / 2 * torch.stack([t.cos(), t.sin()], 1) + 0.05 * noise
    return separation / 2 * noise
