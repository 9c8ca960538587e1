"""lib.seed_stats: t intervals, paired differences and steps to a threshold, against
direct formulas."""

import math

import numpy as np
import pytest
from scipy import stats

from lib.seed_stats import (
    format_interval,
    mean_interval,
    paired_difference,
    steps_to_reach,
)


def test_mean_interval_matches_scipy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 3))
    mean, lo, hi = mean_interval(a, 0.9)
    for j in range(3):
        ref = stats.t.interval(0.9, 4, loc=a[:, j].mean(), scale=stats.sem(a[:, j]))
        assert np.allclose([lo[j], hi[j]], ref, rtol=1e-12) and math.isclose(
            mean[j], a[:, j].mean()
        )
    m1, l1, h1 = mean_interval([[0.3, 0.4]])
    assert (
        np.all(np.isneginf(l1))
        and np.all(np.isposinf(h1))
        and np.allclose(m1, [0.3, 0.4])
    )


def test_paired_difference():
    a = np.array([0.80, 0.82, 0.85, 0.81])
    b = a - np.array([0.01, 0.02, 0.015, 0.012])
    d = paired_difference(a, b)
    assert d.n == 4 and np.allclose(d.per_seed, a - b)
    assert d.lo > 0 and d.excludes_zero()
    same = paired_difference(a, a[::-1])
    assert not same.excludes_zero()
    with pytest.raises(ValueError, match="same shape"):
        paired_difference(a, b[:3])


def test_steps_to_reach():
    steps = [0, 10, 20, 30]
    curves = [[0.5, 0.7, 0.8, 0.9], [0.5, 0.6, 0.6, 0.79]]
    out = steps_to_reach(steps, curves, 0.8)
    assert out[0] == 20 and np.isnan(out[1])
    with pytest.raises(ValueError, match="shape"):
        steps_to_reach(steps[:3], curves, 0.8)


def test_bad_inputs():
    with pytest.raises(ValueError, match="one row per seed"):
        mean_interval([])
    with pytest.raises(ValueError, match="finite"):
        mean_interval([[1.0, np.nan]])
    with pytest.raises(ValueError, match="confidence"):
        mean_interval([1.0, 2.0], confidence=1.5)


def test_format_interval():
    values = [0.80, 0.82, 0.84]
    _, lo, hi = mean_interval(values)
    assert format_interval(values) == f"0.820 [{lo:.3f}, {hi:.3f}]"
    assert format_interval([0.5], digits=2) == "0.50 (1 seed)"
    assert format_interval([0.01, 0.03], sign=True).startswith("+0.020 [")


def test_compare_kernels():
    from lib.seed_stats import compare_kernels

    rng = np.random.default_rng(1)
    soft = 0.7 + 0.01 * rng.normal(size=(4, 5))
    acc = {
        "softmax": soft,
        "gaussian": soft + 0.05,
    }  # Gaussian better at every step and seed
    loss = {"softmax": 1 - soft, "gaussian": 1 - soft}  # identical losses
    table, diffs, verdicts = compare_kernels(acc, loss)
    assert verdicts["final test accuracy"] == "Gaussian better"
    assert verdicts["mean test accuracy over the run"] == "Gaussian better"
    assert verdicts["final test loss"] == "no detectable difference"
    assert np.allclose(diffs["final test accuracy"].per_seed, 0.05)
    assert len(table.rows) == 4 and table.rows[0][2] == "4 of 4"
    worse = {"softmax": soft, "gaussian": soft - 0.05}
    _, _, v = compare_kernels(
        worse, loss, final_acc={"softmax": soft[:, 2], "gaussian": soft[:, 2] - 0.1}
    )
    assert v["final test accuracy"] == "Softmax better"


def test_chance_summary():
    from lib.seed_stats import chance_summary

    acc = {"softmax": [[0.5, 0.52, 0.49]], "gaussian": [[0.5, 0.8, 0.51]]}
    loss = {"softmax": [[0.70, 0.69, 0.695]], "gaussian": [[0.70, 0.60, 0.70]]}
    out = chance_summary(acc, loss, num_test=400)  # margin 0.05
    assert np.isclose(out["margin"], 0.05) and out["final_at_chance"]
    assert out["outside"] == 1 and out["evaluations"] == 4
    assert np.isclose(out["lowest_loss_minus_ln2"], 0.60 - np.log(2))
    with pytest.raises(ValueError, match="num_test"):
        chance_summary(acc, loss, num_test=0)
