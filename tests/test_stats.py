"""Tests of lib.stats: the Wilson interval against a reference value and scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from lib.stats import wilson_interval


def test_reference_value():
    low, high = wilson_interval(3, 20)
    assert abs(low - 0.0524) < 1e-4 and abs(high - 0.3604) < 1e-4


@pytest.mark.parametrize("trials", [1, 7, 20, 100])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_agrees_with_scipy(trials, confidence):
    for k in range(trials + 1):
        ci = binomtest(k, trials).proportion_ci(
            confidence_level=confidence, method="wilson"
        )
        low, high = wilson_interval(k, trials, confidence)
        assert abs(low - ci.low) < 1e-12 and abs(high - ci.high) < 1e-12


def test_edges_and_numpy_integers():
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    low, high = wilson_interval(np.int64(5), np.int64(10))
    assert low < 0.5 < high and abs((0.5 - low) - (high - 0.5)) < 1e-12


@pytest.mark.parametrize(
    "args, error, match",
    [
        ((3, 0), ValueError, "trials"),
        ((-1, 10), ValueError, "successes"),
        ((11, 10), ValueError, "successes"),
        ((2.5, 10), TypeError, "successes"),
        ((2, "10"), TypeError, "trials"),
        ((2, 10, 1.0), ValueError, "confidence"),
        ((2, 10, 0.0), ValueError, "confidence"),
    ],
)
def test_bad_inputs(args, error, match):
    with pytest.raises(error, match=match):
        wilson_interval(*args)


def test_mcnemar_matches_binomial_test():
    from lib.stats import mcnemar_exact

    for b, c in [(0, 0), (3, 0), (0, 7), (5, 12), (20, 20), (1, 30)]:
        expected = 1.0 if b + c == 0 else binomtest(b, b + c, 0.5).pvalue
        assert abs(mcnemar_exact(b, c) - expected) < 1e-12
    assert mcnemar_exact(0, 6) < 0.05 < mcnemar_exact(0, 5)
    with pytest.raises(ValueError, match="only_a"):
        mcnemar_exact(-1, 2)


def test_paired_table_counts():
    from lib.stats import paired_table

    a = np.array([True, True, False, False, True])
    b = np.array([True, False, True, False, False])
    t = paired_table(a, b)
    assert (t.only_a, t.only_b, t.both, t.neither) == (2, 1, 1, 1)
    assert t.trials == 5 and t.successes_a == 3 and t.successes_b == 2
    assert abs(t.p_value - binomtest(1, 3, 0.5).pvalue) < 1e-12
    with pytest.raises(ValueError, match="same positive length"):
        paired_table(a, b[:3])
    with pytest.raises(TypeError, match="boolean"):
        paired_table(a.astype(int), b)


def test_rare_event_bound():
    from lib.stats import rare_event_bound

    assert abs(rare_event_bound(0, 300) - (1 - 0.05 ** (1 / 300))) < 1e-12
    ci = binomtest(2, 50).proportion_ci(confidence_level=0.90, method="exact")
    assert abs(rare_event_bound(2, 50, 0.95) - ci.high) < 1e-10
    assert rare_event_bound(5, 5) == 1.0
    with pytest.raises(ValueError, match="events"):
        rare_event_bound(6, 5)


def test_median_range_by_groups():
    from lib.stats import median_range_by

    keys, med, lo, hi = median_range_by([2, 1, 2, 1, 2], [5.0, 1.0, 3.0, 2.0, 4.0])
    assert keys.tolist() == [1.0, 2.0] and med.tolist() == [1.5, 4.0]
    assert lo.tolist() == [1.0, 3.0] and hi.tolist() == [2.0, 5.0]
    with pytest.raises(ValueError, match="same non-zero length"):
        median_range_by([1, 2], [1.0])


def test_mean_row_cosine():
    import torch

    from lib.stats import mean_row_cosine

    same = torch.ones(3, 4, 5, dtype=torch.float64)  # identical rows: cosine 1
    assert abs(mean_row_cosine(same) - 1.0) < 1e-12
    orthogonal = torch.eye(4, dtype=torch.float64).unsqueeze(0)
    assert abs(mean_row_cosine(orthogonal)) < 1e-12
    M = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0),
                    dtype=torch.float64)
    U = M / M.norm(dim=-1, keepdim=True)
    pairs = [(U[b, i] @ U[b, j]).item() for b in range(2) for i in range(3)
             for j in range(3) if i != j]
    assert abs(mean_row_cosine(M) - np.mean(pairs)) < 1e-12
    with pytest.raises(ValueError, match="n >= 2"):
        mean_row_cosine(torch.ones(1, 4))
