"""Statistics over independent runs (seeds): means with t intervals, paired differences,
thresholds.

    mean, lo, hi = mean_interval(acc)             # acc: (seeds, evals) -> three
    (evals,) arrays diff = paired_difference(acc_g, acc_s)         # Gaussian -
    Softmax, paired by seed diff.mean, diff.lo, diff.hi, diff.per_seed     # 95% t
    interval of the mean difference steps_to_reach(steps, acc, 0.80)               #
    (seeds,) first step at or above 0.80 (nan: never)

Intervals are Student-t intervals of a mean over seeds: mean +- t_{n-1, (1+c)/2} * s /
sqrt(n), with s the sample standard deviation; they assume the seeds are independent
draws and say nothing with a single seed (the interval is then infinite).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = [
    "mean_interval",
    "format_interval",
    "PairedDifference",
    "paired_difference",
    "steps_to_reach",
    "verdict",
    "compare_kernels",
    "chance_summary",
]


def _runs(values: object, name: str) -> np.ndarray:
    a = np.asarray(values, dtype=float)
    if a.ndim == 0 or a.shape[0] == 0:
        raise ValueError(
            f"{name} must have one row per seed (at least one), got shape {a.shape}"
        )
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite")
    return a


def _check_confidence(confidence: float) -> float:
    if (
        isinstance(confidence, bool)
        or not isinstance(confidence, (int, float))
        or not 0 < confidence < 1
    ):
        raise ValueError(f"confidence must be a number in (0, 1), got {confidence!r}")
    return float(confidence)


def mean_interval(
    values: object, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, lower, upper) over the first axis (seeds) of values: (n, ...) -> three
    (...) arrays.

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


def format_interval(
    values: object, digits: int = 3, confidence: float = 0.95, sign: bool = False
) -> str:
    """ "mean [lower, upper]" of values: (n,) over seeds, t interval; "mean (1
    seed)" when n = 1."""
    mean, lo, hi = (
        float(v)
        for v in mean_interval(np.asarray(values, dtype=float).reshape(-1), confidence)
    )
    f = f"{{:{'+' if sign else ''}.{digits}f}}"
    if not math.isfinite(lo):
        return f.format(mean) + " (1 seed)"
    return f"{f.format(mean)} [{f.format(lo)}, {f.format(hi)}]"


@dataclass
class PairedDifference:
    """Differences a - b paired by seed: per_seed (n, ...), their mean and its t
    interval."""

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


def paired_difference(
    a: object, b: object, confidence: float = 0.95
) -> PairedDifference:
    """a - b paired by seed (row i of a and of b come from the same seed). a, b: (n,
    ...)."""
    a, b = _runs(a, "a"), _runs(b, "b")
    if a.shape != b.shape:
        raise ValueError(
            f"a and b must have the same shape (seeds paired row by row), got {a.shape}"
            f" and {b.shape}"
        )
    d = a - b
    mean, lo, hi = mean_interval(d, confidence)
    return PairedDifference(d, mean, lo, hi, float(confidence))


def steps_to_reach(steps: object, curves: object, threshold: float) -> np.ndarray:
    """First step at which each curve is >= threshold. steps: (T,), curves: (n, T)
    -> (n,), nan = never."""
    s = np.asarray(steps, dtype=float)
    c = _runs(curves, "curves")
    if c.ndim != 2 or s.shape != (c.shape[1],):
        raise ValueError(
            f"curves must have shape (seeds, {s.size}) to match steps, got {c.shape}"
        )
    reached = c >= threshold
    first = np.argmax(reached, axis=1)
    return np.where(reached.any(axis=1), s[first], np.nan)


def verdict(
    d: PairedDifference, names: tuple[str, str] = ("Gaussian", "Softmax")
) -> str:
    """ "<a> better" or "<b> better" when the interval of the mean difference a - b
    excludes 0 (for a scalar difference), else "no detectable difference"."""
    if not bool(d.excludes_zero()):
        return "no detectable difference"
    return f"{names[0] if float(d.mean) > 0 else names[1]} better"


def compare_kernels(
    acc: dict,
    loss: dict,
    final_acc: dict | None = None,
    final_loss: dict | None = None,
    kernels: tuple[str, str] = ("gaussian", "softmax"),
    confidence: float = 0.95,
):
    """Paired comparison of two kernels on four quantities; positive differences
    favour kernels[0].

    acc, loss: {kernel: (n, T)} test curves of n seeds (column 0 = step 0);
    final_acc, final_loss: {kernel: (n,)} end values (default: the last column of
    the curves, e.g. pass a full-test-set evaluation instead). Quantities: final
    accuracy and loss, and accuracy and loss averaged over the evaluations after
    step 0. Returns (``lib.tables.Table``, {quantity: ``PairedDifference``},
    {quantity: verdict}); the verdict names a kernel when the t interval of the mean
    paired difference excludes 0.
    """
    from .tables import Table

    a, b = kernels
    final_acc = final_acc or {k: np.asarray(v)[:, -1] for k, v in acc.items()}
    final_loss = final_loss or {k: np.asarray(v)[:, -1] for k, v in loss.items()}
    mean_acc = {k: np.asarray(v)[:, 1:].mean(1) for k, v in acc.items()}
    mean_loss = {k: np.asarray(v)[:, 1:].mean(1) for k, v in loss.items()}
    labels = (a.capitalize(), b.capitalize())
    rows, diffs, verdicts = [], {}, {}
    for name, values, sign in (
        ("final test accuracy", final_acc, 1),
        ("final test loss", final_loss, -1),
        ("mean test accuracy over the run", mean_acc, 1),
        ("mean test loss over the run", mean_loss, -1),
    ):
        d = paired_difference(
            sign * np.asarray(values[a]), sign * np.asarray(values[b]), confidence
        )
        diffs[name], verdicts[name] = d, verdict(d, labels)
        rows.append(
            (
                name,
                format_interval(d.per_seed, 4, confidence, sign=True),
                f"{int((d.per_seed > 0).sum())} of {d.n}",
                verdicts[name],
            )
        )
    header = [
        "quantity",
        f"difference favouring {labels[0]}, mean [{confidence:.0%} CI]",
        f"seeds favouring {labels[0]}",
        "verdict",
    ]
    return Table(header, rows), diffs, verdicts


def chance_summary(acc: dict, loss: dict, num_test: int) -> dict:
    """Where two-class test curves stand relative to guessing. acc, loss: {kernel:
    (n, T)}.

    Returns margin = 2 sqrt(0.25 / num_test) (two binomial standard errors at
    accuracy 1/2);
    final_at_chance: every final accuracy within 1/2 +- margin;
    lowest_loss_minus_ln2: the lowest test loss of any run minus ln 2 (the loss of
    outputting 1/2); outside / evaluations: the evaluations after step 0 with an
    accuracy outside the band, and their number (a label-blind classifier lands
    outside at about 4.6% of them).
    """
    if isinstance(num_test, bool) or not isinstance(num_test, int) or num_test < 1:
        raise ValueError(f"num_test must be a positive integer, got {num_test!r}")
    margin = 2 * math.sqrt(0.25 / num_test)
    final = np.concatenate([np.asarray(a)[:, -1] for a in acc.values()])
    later = np.concatenate([np.asarray(a)[:, 1:] for a in acc.values()])
    lowest = min(float(np.min(v)) for v in loss.values()) - math.log(2)
    return {
        "margin": margin,
        "final_at_chance": bool(np.all(np.abs(final - 0.5) <= margin)),
        "lowest_loss_minus_ln2": lowest,
        "outside": int((np.abs(later - 0.5) > margin).sum()),
        "evaluations": int(later.size),
        "final": final,
    }
