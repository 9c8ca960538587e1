"""Interval estimates for the book's counts over seeds and test sets."""
from __future__ import annotations

import math

from scipy.stats import norm

__all__ = ["wilson_interval"]


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion ``successes / trials``: (low, high) in [0, 1].

    Unlike the normal (Wald) interval it stays inside [0, 1] and has a sensible width at 0 or
    ``trials`` successes, which is where counts of converged seeds often sit.
    """
    for name, value in (("successes", successes), ("trials", trials)):
        if isinstance(value, bool) or not hasattr(value, "__index__"):
            raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    successes, trials = int(successes), int(trials)
    if trials <= 0:
        raise ValueError(f"trials must be a positive integer, got {trials}")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be in [0, trials] = [0, {trials}], got {successes}")
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) \
            or not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be a number in (0, 1), got {confidence!r}")
    z = float(norm.ppf(0.5 + confidence / 2))
    p = successes / trials
    denominator = 1 + z**2 / trials
    centre = (p + z**2 / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z**2 / (4 * trials**2)) / denominator
    low = 0.0 if successes == 0 else max(centre - half, 0.0)
    high = 1.0 if successes == trials else min(centre + half, 1.0)
    return low, high
