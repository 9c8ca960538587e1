"""Statistics over independent runs (seeds): means with t intervals, paired differences, thresholds.

    mean, lo, hi = mean_interval(acc)             # acc: (seeds, evals) -> three (evals,) arrays
    diff = paired_difference(acc_g, acc_s)         # Gaussian - Softmax, paired by seed
    diff.mean, diff.lo, diff.hi, diff.per_seed     # 95% t interval of the mean difference
    steps_to_reach(steps, acc, 0.80)               # (seeds,) first step at or above 0.80 (nan: never)

Intervals are Student-t intervals of a mean over seeds: mean +- t_{n-1, (1+c)/2} * s / sqrt(n),
with s the sample standard deviation; they assume the seeds are independent draws and say nothing
with a single seed (the interval is then infinite).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["mean_interval", "PairedDifference", "paired_difference", "steps_to_reach"]


def _runs(values: object, name: str) -> np.ndarray:
    a = np.asarray(values, dtype=float)
    if a.ndim == 0 or a.shape[0] == 0:
        raise ValueError(f"{name} must have one row per seed (at least one), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite")
    return a


def _check_confidence(confidence: float) -> float:
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise ValueError(f"confidence must be a number in (0, 1), got {confidence!r}")
    return float(confidence)


def mean_interval(values: object, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, lower, upper) over the first axis (seeds) of values: (n, ...) -> three (...) arrays.

    Student-t interval of the mean; with n = 1 the bounds are -inf and +inf.
    """
    a = _runs(values, "values")
    c = _check_confidence(confidence)
    n = a.shape[0]
    mean = a.mean(axis=0)
    if n < 2:
        return mean, np.full_like(mean, -np.inf), np.full_like(mean, np.inf)
    half = stats.t.ppf(0.5 + c / 2, n - 1) * a.std(axis=0, ddof=1) / math.sqrt(n)
    return mean, mean - half, mean + half


@dataclass
class PairedDifference:
    """Differences a - b paired by seed: per_seed (n, ...), their mean and its t interval."""

    per_seed: np.ndarray
    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    confidence: float

    @property
    def n(self) -> int:
        return self.per_seed.shape[0]

    def excludes_zero(self) -> np.ndarray:
        """Where the interval lies entirely above or entirely below 0."""
        return (self.lo > 0) | (self.hi < 0)


def paired_difference(a: object, b: object, confidence: float = 0.95) -> PairedDifference:
    """a - b paired by seed (row i of a and of b come from the same seed). a, b: (n, ...)."""
    a, b = _runs(a, "a"), _runs(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape (seeds paired row by row), got {a.shape} and {b.shape}")
    d = a - b
    mean, lo, hi = mean_interval(d, confidence)
    return PairedDifference(d, mean, lo, hi, float(confidence))


def steps_to_reach(steps: object, curves: object, threshold: float) -> np.ndarray:
    """First step at which each curve is >= threshold. steps: (T,), curves: (n, T) -> (n,), nan = never."""
    s = np.asarray(steps, dtype=float)
    c = _runs(curves, "curves")
    if c.ndim != 2 or s.shape != (c.shape[1],):
        raise ValueError(f"curves must have shape (seeds, {s.size}) to match steps, got {c.shape}")
    reached = c >= threshold
    first = np.argmax(reached, axis=1)
    return np.where(reached.any(axis=1), s[first], np.nan)
