"""Summaries of the book's results over seeds: interval estimates, paired tests and
descriptive statistics.

* ``wilson_interval``: a confidence interval for one proportion (k successes of m).
* ``paired_table`` / ``mcnemar_exact``: two methods run on the same m problems; the
  2x2 table (only A succeeded / only B / both / neither) and the exact McNemar test,
  which uses only the discordant pairs.
* ``rare_event_bound``: an upper confidence bound on a probability from k events in m
  trials (Clopper-Pearson), e.g. "0 of 300 pairs showed it".
* ``median_range_by``: median, minimum and maximum of a value per group (e.g. per width
  ratio).
* ``mean_row_cosine``: how aligned the rows of token matrices are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from scipy.stats import binom, norm

from .validation import check_int, check_number

__all__ = [
    "wilson_interval",
    "PairedTable",
    "paired_table",
    "mcnemar_exact",
    "rare_event_bound",
    "median_range_by",
    "mean_row_cosine",
]


def wilson_interval(
    successes: int, trials: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Wilson score interval for a proportion ``successes / trials``: (low, high) in [0,
    1].

    Unlike the normal (Wald) interval it stays inside [0, 1] and has a sensible width at
    0 or ``trials`` successes, which is where counts of converged seeds often sit.
    """
    trials = check_int(trials, "trials", minimum=1)
    successes = check_int(successes, "successes", 0, trials)
    confidence = check_number(
        confidence, "confidence", 0.0, 1.0, low_open=True, high_open=True
    )
    z = float(norm.ppf(0.5 + confidence / 2))
    p = successes / trials
    denominator = 1 + z**2 / trials
    centre = (p + z**2 / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z**2 / (4 * trials**2)) / denominator
    low = 0.0 if successes == 0 else max(centre - half, 0.0)
    high = 1.0 if successes == trials else min(centre + half, 1.0)
    return low, high


def _count(value: object, name: str) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__") or int(value) < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts of a paired table.

    Under the null hypothesis (both methods succeed equally often), each of the
    ``only_a + only_b`` discordant pairs falls on either side with probability 1/2, so
    the p-value is the two-sided binomial tail: min(1, 2 P[Bin(b + c, 1/2) <= min(b,
    c)]). 1.0 when there are no discordant pairs.
    """
    b, c = _count(only_a, "only_a"), _count(only_b, "only_b")
    if b + c == 0:
        return 1.0
    return float(min(1.0, 2.0 * binom.cdf(min(b, c), b + c, 0.5)))


@dataclass(frozen=True)
class PairedTable:
    """The paired 2x2 table of two methods A and B on the same problems, and its exact
    test.

    only_a, only_b, both, neither: counts of problems; p_value: exact McNemar
    (``mcnemar_exact``).
    """

    only_a: int
    only_b: int
    both: int
    neither: int
    p_value: float

    @property
    def trials(self) -> int:
        return self.only_a + self.only_b + self.both + self.neither

    @property
    def successes_a(self) -> int:
        return self.only_a + self.both

    @property
    def successes_b(self) -> int:
        return self.only_b + self.both


def paired_table(success_a: "np.ndarray", success_b: "np.ndarray") -> PairedTable:
    """Paired table of two boolean arrays (M,): problem m solved by A, by B."""
    a, b = np.asarray(success_a), np.asarray(success_b)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(
            "success_a and success_b must be 1-D arrays of the same positive length, "
            "got "
            f"shapes {a.shape} and {b.shape}"
        )
    if a.dtype != bool or b.dtype != bool:
        raise TypeError(
            f"success_a and success_b must be boolean arrays, got {a.dtype} and "
            f"{b.dtype}"
        )
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    return PairedTable(
        only_a,
        only_b,
        int((a & b).sum()),
        int((~a & ~b).sum()),
        mcnemar_exact(only_a, only_b),
    )


def rare_event_bound(events: int, trials: int, confidence: float = 0.95) -> float:
    """One-sided upper confidence bound (Clopper-Pearson) on a probability seen
    ``events`` times in ``trials`` independent trials; for 0 events it is 1 - (1 -
    confidence)**(1/trials), about 3/trials
    at 95% (the "rule of three")."""
    k, m = _count(events, "events"), _count(trials, "trials")
    if m == 0 or k > m:
        raise ValueError(
            f"need 0 <= events <= trials and trials > 0, got events={k}, trials={m}"
        )
    if (
        isinstance(confidence, bool)
        or not isinstance(confidence, (int, float))
        or not 0 < confidence < 1
    ):
        raise ValueError(f"confidence must be a number in (0, 1), got {confidence!r}")
    if k == m:
        return 1.0
    from scipy.stats import beta

    return float(beta.ppf(confidence, k + 1, m - k))


def median_range_by(
    groups: Sequence[float], values: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per distinct group key (ascending): (keys, median, min, max) of the values in
    that group.

    ``groups`` and ``values``: sequences of equal, non-zero length (e.g. one entry per
    run).
    """
    groups, values = np.asarray(groups, dtype=float), np.asarray(values, dtype=float)
    if groups.ndim != 1 or groups.shape != values.shape or groups.size == 0:
        raise ValueError(
            f"groups and values must be 1-D of the same non-zero length, got shapes "
            f"{groups.shape} and {values.shape}"
        )
    keys = np.unique(groups)
    parts = [values[groups == key] for key in keys]
    return (
        keys,
        np.array([np.median(p) for p in parts]),
        np.array([p.min() for p in parts]),
        np.array([p.max() for p in parts]),
    )


def mean_row_cosine(M: torch.Tensor) -> float:
    """Mean cosine similarity between distinct rows of each (n, D) matrix of M: (..., n,
    D), n >= 2,
    averaged over the matrices."""
    if not isinstance(M, torch.Tensor) or M.dim() < 2 or M.shape[-2] < 2:
        raise ValueError(
            "M must be a tensor of shape (..., n, D) with n >= 2, got "
            f"{getattr(M, 'shape', M)!r}"
        )
    U = torch.nn.functional.normalize(M, dim=-1)
    n = M.shape[-2]
    return ((U @ U.transpose(-1, -2)).sum((-1, -2)) - n).mean().item() / (n * (n - 1))
