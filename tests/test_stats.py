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
        ci = binomtest(k, trials).proportion_ci(confidence_level=confidence, method="wilson")
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
