"""Tests of the summaries and printed reports of the chapter on training everything:
lib.training_paths.path_report, lib.containment.containment_report and the summaries of
lib.scale_study (median attention entropy, attention-scale and embedding-dimension
studies), on small runs and on hand-built records."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lib.batched import BatchedAttentionLayer
from lib.containment import containment_report
from lib.data import stacked_random_problems
from lib.scale_study import (dimension_report, dimension_summary, grid_model,
                             median_attention_entropy, scale_report, scale_summary)
from lib.training_paths import path_report, path_summary, run_path


def test_path_report_lines():
    X, Y = stacked_random_problems(range(2), 2, 2, 4, device="cpu")
    model = BatchedAttentionLayer(2, 4, init="orthogonal", seeds=[3, 4], device="cpu")
    run = run_path(model, X, Y, ("W_Q", "W_K", "W_V"), steps=10)
    s = path_summary(run, 2)
    lines = path_report(run, s, "Softmax  (W_O fixed)").splitlines()
    assert len(lines) == 5 and lines[0].startswith("Softmax  (W_O fixed): decrease")
    assert f"held at every step in {2 - len(s['violated'])} of 2 runs" in lines[0]
    ratios = run["loss"][-1] / run["loss"][0]
    assert lines[2] == "         f_T / f_0: " + ", ".join(f"{v:.0e}" for v in ratios)
    assert f"observed {s['observed']:.5f}" in lines[4]
    # a violation is reported with its first step
    bad = dict(s, violated=[1], first_bad=np.array([10, 3]), still=1)
    assert "it first fails at steps [3], and the bound still held in 1" in path_report(
        run, bad, "x")
    with pytest.raises(ValueError, match="path_summary"):
        path_report(run, {"slack": 0.0}, "x")


def test_containment_report():
    m = dict(ratio=np.array([4e7, 1e6]), radius=np.array([1e4, 3e4]),
             travelled=np.array([2.7, 2.25]), kept=np.array([True, False]),
             weyl=np.array([0.0, 1e-3]))
    lines = containment_report(m, "Softmax ").splitlines()
    assert lines[0] == ("Softmax  condition (everything-eq-containment): left / right ="
                        " 4e+07, 1e+06 (<= 1 needed);")
    assert lines[1] == ("         R* = 2e+04, distance travelled by the attention 2.70,"
                        " 2.25;")
    assert lines[2].endswith("1 of 2 runs; min of Weyl's slack 0.0e+00 (>= -1e-12)")
    with pytest.raises(ValueError, match="measured_containment"):
        containment_report({"ratio": m["ratio"]}, "x")


@pytest.mark.parametrize("kernel", ["softmax", "gaussian"])
def test_median_attention_entropy(kernel):
    X, _ = stacked_random_problems(range(2), 2, 3, 4, device="cpu")
    tiny = grid_model(kernel, [1e-4], range(2), 4, 1, "cpu")  # uniform rows: log n
    assert abs(median_attention_entropy(tiny, X) - math.log(3)) < 1e-6
    assert tiny.kernel == kernel  # restored
    large = grid_model(kernel, [8.0], range(2), 4, 1, "cpu")  # (near) one-hot rows
    assert median_attention_entropy(large, X) < median_attention_entropy(tiny, X)
    with pytest.raises(TypeError, match="BatchedAttentionLayer"):
        median_attention_entropy(torch.zeros(2), X)


def _scale_records():
    fine, train = 2.0 ** np.arange(-4, 4.01, 1.0), 2.0 ** np.arange(-3, 3.01, 1.0)
    init, sweep = {}, {}
    for k, top in (("softmax", 1.0), ("gaussian", 0.5)):
        lam = -np.abs(np.log2(fine) - np.log2(top))[:, None] * np.ones((1, 3))
        init[k] = dict(lambda_b=10.0**lam, entropy=np.log(4) / (1 + fine),
                       s_max=np.exp(-fine)[:, None] * np.ones((1, 3)))
        ratio = np.tile((0.1 * train)[:, None], (1, 2))
        sweep[k] = dict(ratio=ratio, growth_q=np.full_like(ratio, 3.0))
    return fine, train, init, sweep


def test_scale_summary_and_report():
    fine, train, init, sweep = _scale_records()
    s = scale_summary(init, sweep, fine, train)
    assert s["peak"] == {"softmax": 1.0, "gaussian": 0.5} and s["entropy_gap"] == 0.0
    assert s["median_ratio"]["softmax"][8.0] == 0.8
    assert math.isclose(s["median_ratio"]["gaussian"][0.125], 0.0125)
    assert s["gaussian_stuck"] == 0.4 and s["gaussian_s_max"] == math.exp(-4)
    assert s["growth"] == {"softmax": 3.0, "gaussian": 3.0}
    lines = scale_report(s).splitlines()
    assert len(lines) == 6 and "Softmax 1.00 (in [1, 2])" in lines[0]
    assert "s=8 8.0e-01" in lines[2] and "s=0.5 5.0e-02" in lines[3]
    with pytest.raises(ValueError, match="both kernels"):
        scale_summary({"softmax": init["softmax"]}, sweep, fine, train)


def test_dimension_summary_and_report():
    dims, seeds = [4, 8, 12], 4
    sweep = {}
    for D in dims:
        lam = np.full(seeds, 0.0 if D < 8 else 1e-3 * D)
        ratio = np.array([1e-7, 1e-5, 1e-3, 1e-1]) if D == 12 else np.full(seeds, 0.5)
        sweep["softmax", D] = dict(ratio=ratio, lambda_b=lam, lambda_max=np.ones(seeds))
    s = dimension_summary(sweep, "softmax", dims, 8, 1e-6)
    assert s["converged"] == {4: 0.0, 8: 0.0, 12: 0.25}
    assert s["median_ratio"][12] == pytest.approx(5.05e-4)
    assert s["rank_zero"] and s["positive"]
    assert s["median_lambda_b"] == {8: pytest.approx(8e-3), 12: pytest.approx(1.2e-2)}
    sweep["softmax", 12]["lambda_b"][0] = 0.0  # a rank-deficient seed above threshold
    assert not dimension_summary(sweep, "softmax", dims, 8, 1e-6)["positive"]
    lines = dimension_report(s, "Softmax ", 800, 8).splitlines()
    assert lines[0] == ("Softmax  converged within 800 steps: D=4: 0.00, D=8: 0.00,"
                        " D=12: 0.25")
    assert lines[3] == ("         median lambda_B at D = 8: 8.0e-03, at D = 12: 1.2e-02"
                        " (>= 10 x)")
    with pytest.raises(ValueError, match="no point"):
        dimension_summary(sweep, "gaussian", dims, 8, 1e-6)
    with pytest.raises(ValueError, match="threshold"):
        dimension_report(s, "x", 800, 4)
