"""Tests of the chapter helpers of lib.mirror_example (the three-token example) and of
lib.scalar_example (scalar tokens, Exercise 5.1)."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

from lib.mirror_example import (  # noqa: E402
    T_STAR,
    check_point,
    example_inputs,
    explore_slice,
    explore_slice_widgets,
    phi,
    point_kind,
    separable_loss_error,
    spurious_minima,
    stationary_points,
    trap_leading_value,
    two_dim_layer,
)
from lib.scalar_example import (  # noqa: E402
    scalar_closed_form_error,
    scalar_loss,
    scalar_problem,
)


def test_separable_loss_error_is_rounding_and_checks_shape():
    ws = np.random.default_rng(0).uniform(-4, 4, size=(3, 3))
    for kernel in ("softmax", "gaussian"):
        assert separable_loss_error(kernel, ws, "cpu") < 1e-14
    with pytest.raises(ValueError, match="ws must have shape"):
        separable_loss_error("softmax", np.zeros((3, 2)), "cpu")
    with pytest.raises(ValueError, match="kernel"):
        separable_loss_error("relu", ws, "cpu")


def test_trap_leading_value_is_the_small_h_limit():
    # y_1(t*) by hand, and the trap's loss approaches the leading value as h -> 0
    y1 = -2 * math.sinh(T_STAR) / (2 * math.cosh(T_STAR) + 1)
    assert trap_leading_value(0.2) == pytest.approx(2 * 0.04 * y1**2, rel=1e-15)
    gaps = []
    for h in (0.2, 0.05):
        t_h = stationary_points("softmax", h=h)[0]
        gaps.append(abs(phi("softmax", t_h, h=h) / trap_leading_value(h) - 1))
    assert gaps[1] < gaps[0] and gaps[1] < 1e-2


def test_point_kind_and_spurious_minima():
    assert point_kind(0.0, torch.tensor([1.0])) == "global minimum"
    assert point_kind(0.5, torch.tensor([0.1, 2.0])) == "local minimum"
    assert point_kind(0.5, np.array([-0.1, 2.0])).startswith("saddle")
    trap = stationary_points("softmax")[0]
    f, _, eig = check_point("softmax", trap, device="cpu")
    assert point_kind(f, eig) == "local minimum"
    # the Softmax trap at h = 0.2 is the only one; it is gone at h = 0.6
    assert spurious_minima("softmax", 0.2) == pytest.approx([trap])
    assert spurious_minima("softmax", 0.6) == []
    assert len(spurious_minima("gaussian", 0.6)) >= 1


def test_explore_slice_draws_the_gd_path_to_the_trap():
    fig = explore_slice("softmax")
    title = fig.axes[0].get_title()
    trap = stationary_points("softmax")[0]
    assert f"({trap:.2f}, 0.50)" not in title and f"({trap:.2f}," in title
    matplotlib.pyplot.close(fig)
    with pytest.raises(ValueError, match="kernel"):
        explore_slice("relu")


def test_two_dim_layer_keys_and_trap():
    X = example_inputs("cpu")
    start = [[stationary_points("softmax")[0], 0.0], [T_STAR, 0.0], [T_STAR, 0.0]]
    target = two_dim_layer(0.0, [[T_STAR, 0.0]] * 3, "cpu")
    assert torch.allclose(target.W_K[0, :, 0], math.sqrt(2) * torch.tensor(
        [-1.0, 0.0, 1.0], dtype=torch.float64))
    with torch.no_grad():
        Y = target(X)
    grads = []
    for eps in (0.0, 1.0):
        layer = two_dim_layer(eps, start, "cpu")
        loss = 0.5 * ((layer(X) - Y) ** 2).sum()
        grads.append(torch.autograd.grad(loss, layer.W_Q)[0].norm().item())
    assert grads[0] < 1e-10 < 1e-3 < grads[1]  # eps = 0: still a trap; eps = 1: not
    with pytest.raises(ValueError, match="W_Q must have shape"):
        two_dim_layer(1.0, [[0.0, 0.0]] * 2, "cpu")


def test_scalar_problem_and_closed_form():
    for kernel in ("softmax", "gaussian"):
        student, X1, Y1, w_star = scalar_problem(kernel, 3, device="cpu")
        assert X1.shape == Y1.shape == (1, 2, 1)
        assert scalar_loss(kernel, student, X1, Y1, [w_star])[0] < 1e-28
        assert scalar_loss(kernel, student, X1, Y1, [w_star + 1.0])[0] > 0
        assert scalar_closed_form_error(kernel, student, X1, Y1) < 1e-12
        # a wrong closed form is detected: targets of another problem
        _, _, Y_other, _ = scalar_problem(kernel, 4, device="cpu")
        assert scalar_loss(kernel, student, X1, Y_other, [w_star])[0] > 1e-6
    with pytest.raises(ValueError, match="kernel"):
        scalar_problem("relu", 0, device="cpu")
    with pytest.raises((ValueError, TypeError), match="seed"):
        scalar_problem("softmax", 1.5, device="cpu")


def test_explore_slice_widgets_match_the_figure():
    import inspect

    controls = explore_slice_widgets()
    params = inspect.signature(explore_slice).parameters
    assert list(controls) == list(params)
    for name, widget in controls.items():  # each control starts at the default
        assert widget.value == params[name].default, name
    assert controls["h"].min == 0.0 and controls["h"].max == 0.8
