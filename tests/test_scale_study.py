"""Tests of lib.scale_study and the plotting helpers of lib.training_paths (small
sizes)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402

from lib.batched import BatchedAttentionLayer  # noqa: E402
from lib.data import stacked_random_problems  # noqa: E402
from lib.scale_study import (
    dimension_point,
    grid_model,
    init_statistics,  # noqa: E402
    plot_dimension_study,
    plot_scale_study,
    scale_sweep,
)
from lib.theory import batched_gram_extremes  # noqa: E402
from lib.training_paths import path_summary, plot_paths, run_path  # noqa: E402


def test_grid_model_layout():
    model = grid_model("softmax", [0.5, 2.0], [0, 1], D=4, H=1, device="cpu")
    single = BatchedAttentionLayer(
        1, 4, init="orthogonal", qk_scale=2.0, seeds=[1001], device="cpu"
    )
    assert model.M == 4 and np.allclose(model.W_Q[3].detach(), single.W_Q[0].detach())


def test_studies_shapes_and_limits():
    scales = [0.01, 1.0]
    init = {
        k: init_statistics(k, scales, [0, 1], 2, 3, 4, 1, device="cpu")
        for k in ("softmax", "gaussian")
    }
    assert init["softmax"]["lambda_b"].shape == (2, 2) and init["softmax"][
        "entropy"
    ].shape == (2,)
    assert (
        abs(init["softmax"]["entropy"][0] - np.log(3)) < 1e-3
    )  # tiny scale: uniform rows
    sweep = {
        k: scale_sweep(
            k, scales, [0, 1], 2, 3, 4, 1, steps=3, ref_scale=1.0, device="cpu"
        )
        for k in ("softmax", "gaussian")
    }
    assert (
        sweep["softmax"]["ratio"].shape == (2, 2)
        and (sweep["softmax"]["growth_q"] > 0).all()
    )
    plot_scale_study(
        init,
        sweep,
        np.array(scales),
        np.array(scales),
        {"softmax": 1, "gaussian": 1},
        3,
        3,
    )
    points = {
        (k, D): dimension_point(k, D, [0, 1], 2, 2, 1, 4, 1.0, device="cpu")
        for k in ("softmax", "gaussian")
        for D in (2, 4)
    }
    X, _ = stacked_random_problems([0, 1], 2, 2, 4, device="cpu")
    lam, _ = batched_gram_extremes(grid_model("softmax", [1.0], [0, 1], 4, 1, "cpu"), X)
    assert np.allclose(points["softmax", 4]["lambda_b"], lam.numpy())
    plot_dimension_study(points, [2, 4], 2, 4, 4, 1e-6)


def test_path_summary_and_plot():
    X, Y = stacked_random_problems(range(2), 2, 2, 4, device="cpu")
    model = BatchedAttentionLayer(2, 4, init="orthogonal", seeds=[3, 4], device="cpu")
    run = run_path(model, X, Y, ("W_Q", "W_K", "W_V"), steps=10)
    s = path_summary(run, 2)
    assert s["slack"] <= 1e-9 and 0 < s["observed"] <= 1 and len(s["first_bad"]) == 2
    plot_paths({"softmax": run}, 2)
    plot_paths({"softmax": run}, 2, right="sigma", bound_label="")


def test_gaussian_bound_and_softmax_limit():
    from lib.scale_study import gaussian_scale_bound, softmax_saturation_limit

    for lam, bound in gaussian_scale_bound((1.0, 3.0), [0, 1], 2, 3, 4, 1,
                                           "cpu").values():
        assert (lam <= bound).all()
    lim = softmax_saturation_limit(range(6), 2, 3, 4, 2, 40.0, device="cpu")
    assert lim["collide"].shape == (6,)
    zero = lim["lambda_inf"] <= 1e-12 * lim["lambda_max_inf"]
    assert np.array_equal(zero, lim["collide"])


def test_value_block_pl_ratios():
    from lib.training_paths import value_block_pl_ratios

    low, tight = value_block_pl_ratios("softmax", trials=3, device="cpu")
    assert low >= 1 - 1e-9 and abs(tight - 1) <= 1e-8
