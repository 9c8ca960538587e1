"""Tests of lib.landscape: filter-normalised directions, 1-D/2-D slices, roughness
measures."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from lib.data import random_problem
from lib.landscape import (
    combine,
    filter_dims,
    get_params,
    interpolate_1d,
    model_loss_fn,
    module_loss_fn,
    random_direction,
    roughness,
    slice_1d,
    slice_2d,
)
from lib.model import AttentionLayer, squared_loss

CPU = torch.device("cpu")


def _params():
    gen = torch.Generator().manual_seed(0)
    return {
        "a": torch.randn(3, 4, generator=gen, dtype=torch.float64),
        "b": torch.randn(5, generator=gen, dtype=torch.float64),
        "c": torch.randn(2, 3, 2, generator=gen, dtype=torch.float64),
    }


def _quadratic(coefficients):
    def loss(params):
        return float(sum(coefficients[k] * (v * v).sum() for k, v in params.items()))

    return loss


# ----------------------------------------------------------------------------- slices
def test_slice_2d_of_a_quadratic_matches_the_closed_form():
    center = _params()
    coefficients = {"a": 0.5, "b": 2.0, "c": 1.5}
    loss = _quadratic(coefficients)
    d1 = random_direction(center, seed=1, keep_1d=True)
    d2 = random_direction(center, seed=2, keep_1d=True)
    alphas, betas, Z = slice_2d(loss, center, d1, d2, span=(-2.0, 1.0), num=7,
                                span2=(-1.0, 3.0), num2=5)
    assert Z.shape == (7, 5) and alphas[0] == -2.0 and betas[-1] == 3.0

    def dot(x, y):
        return sum(coefficients[k] * float((x[k] * y[k]).sum()) for k in center)

    # sum_k c_k ||t + a d1 + b d2||^2 = |t|^2 + a^2 |d1|^2 + b^2 |d2|^2 + 2a t.d1
    # + 2b t.d2 + 2ab d1.d2
    A, B = np.meshgrid(alphas, betas, indexing="ij")
    expected = (
        dot(center, center) + A**2 * dot(d1, d1) + B**2 * dot(d2, d2) +
        2 * A * dot(center, d1) + 2 * B * dot(center, d2) + 2 * A * B * dot(d1, d2))
    np.testing.assert_allclose(Z, expected, rtol=1e-12, atol=0)


def test_slice_1d_and_interpolation():
    center = _params()
    coefficients = {"a": 1.0, "b": 1.0, "c": 1.0}
    loss = _quadratic(coefficients)
    d = random_direction(center, seed=3)
    alphas, values = slice_1d(loss, center, d, span=(-1.0, 1.0), num=11)
    assert alphas.shape == values.shape == (11,)
    assert values[5] == pytest.approx(loss(center),
                                      rel=1e-14)  # alpha = 0 is the centre
    end = combine(center, (1.0, d))
    alphas, values = interpolate_1d(loss, center, end, num=9)
    assert values[0] == loss(center) and values[-1] == loss(
        end)  # the endpoints exactly
    alphas, values = interpolate_1d(loss, center, end, num=5, extend=(-0.5, 1.5))
    assert alphas.tolist() == [-0.5, 0.0, 0.5, 1.0, 1.5]
    assert values[1] == loss(center) and values[3] == loss(end)
    with pytest.raises(ValueError, match="same names"):
        interpolate_1d(loss, center, {"a": center["a"]})
    with pytest.raises(ValueError, match="low < high"):
        slice_1d(loss, center, d, span=(1.0, -1.0))


def test_combine_checks_names_and_shapes():
    center = _params()
    partial = {"a": torch.ones(3, 4, dtype=torch.float64)}
    out = combine(center, (2.0, partial))
    assert torch.equal(out["a"], center["a"] + 2.0) and torch.equal(
        out["b"], center["b"])
    with pytest.raises(ValueError, match="shape"):
        combine(center, (1.0, {"a": torch.ones(4, 3, dtype=torch.float64)}))
    with pytest.raises(ValueError, match="names that the centre lacks"):
        combine(center, (1.0, {"z": torch.ones(1, dtype=torch.float64)}))


# -----------------------------------------------------------------------------
# directions
def test_filter_normalisation_gives_the_parameter_norms():
    layer = AttentionLayer(5, H=2, d=3, d_v=4, d_out=6, seed=0, device=CPU)
    params = {**get_params(layer), "lin.weight": torch.randn(7, 3, dtype=torch.float64),
              "lin.bias": torch.randn(7, dtype=torch.float64)}
    d = random_direction(params, seed=4)
    # W_Q, W_K, W_V (H, D, d): one filter per head and column -> norms over axis 1.
    for name in ("W_Q", "W_K", "W_V"):
        torch.testing.assert_close(d[name].norm(dim=1), params[name].norm(dim=1),
                                   rtol=1e-12, atol=0)
    # W_O (H*d_v, d_out): one filter per column.
    torch.testing.assert_close(d["W_O"].norm(dim=0), params["W_O"].norm(dim=0),
                               rtol=1e-12, atol=0)
    # nn.Linear-style weight (out, in): one filter per row.
    torch.testing.assert_close(d["lin.weight"].norm(dim=1),
                               params["lin.weight"].norm(dim=1), rtol=1e-12, atol=0)
    assert torch.equal(d["lin.bias"], torch.zeros(7, dtype=torch.float64))  # 1-D: zero
    kept = random_direction(params, seed=4, keep_1d=True)
    assert float(kept["lin.bias"].norm()) == pytest.approx(
        float(params["lin.bias"].norm()), rel=1e-12)
    custom = random_direction(params, seed=4, dims={"W_O": (0,)})  # rows instead
    torch.testing.assert_close(custom["W_O"].norm(dim=1), params["W_O"].norm(dim=1),
                               rtol=1e-12, atol=0)
    raw = random_direction(params, seed=4, filter_normalize=False)
    assert not torch.allclose(raw["W_Q"].norm(dim=1), params["W_Q"].norm(dim=1))
    again = random_direction(params, seed=4)
    assert all(torch.equal(again[k], d[k]) for k in d)  # seeded
    assert not torch.equal(random_direction(params, seed=5)["W_Q"], d["W_Q"])


def test_filter_dims_rules():
    assert filter_dims("bias", (7,)) == () and filter_dims("scalar", ()) == ()
    assert filter_dims("W_Q",
                       (2, 5, 3)) == (0, 2) and filter_dims("blocks.1.W_V",
                                                            (2, 5, 3)) == (0, 2)
    assert filter_dims("W_O", (8, 6)) == (1,)
    assert filter_dims("fc.weight",
                       (7, 3)) == (0, ) and filter_dims("conv.weight",
                                                        (4, 3, 3, 3)) == (0, )


# ----------------------------------------------------------------------------- loss
# functions
def test_model_loss_fn_and_module_loss_fn_agree_with_the_model():
    problem = random_problem(4, 3, 5, seed=0, device=CPU)
    layer = AttentionLayer(5, seed=1, device=CPU)
    center = get_params(layer)
    f = model_loss_fn(layer, problem.X, problem.Y)
    g = module_loss_fn(layer, lambda module: squared_loss(module(problem.X), problem.Y))
    reference = float(squared_loss(layer(problem.X), problem.Y).detach())
    assert f(center) == pytest.approx(
        reference, rel=1e-14) and g(center) == pytest.approx(reference, rel=1e-14)
    moved = combine(center, (0.3, random_direction(center, seed=0)))
    assert f(moved) == pytest.approx(g(moved), rel=1e-13)
    assert f({"W_V": moved["W_V"]}) == pytest.approx(g({"W_V": moved["W_V"]}),
                                                     rel=1e-13)  # a subset
    assert all(torch.equal(getattr(layer, k).detach(), v)
               for k, v in center.items())  # restored

    def failing(module):
        raise RuntimeError("boom")

    h = module_loss_fn(layer, failing)
    with pytest.raises(RuntimeError, match="boom"):
        h(moved)
    assert all(torch.equal(getattr(layer, k).detach(), v)
               for k, v in center.items())  # restored after an error
    with pytest.raises(ValueError, match="unknown parameter name 'W_X'"):
        f({"W_X": moved["W_V"]})


def test_module_loss_fn_on_a_generic_module():
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    x = torch.randn(10, 3, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(0))
    loss = module_loss_fn(net, lambda m: (m(x) ** 2).mean())
    params = get_params(net)
    assert set(params) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    d1, d2 = random_direction(params, seed=0), random_direction(params, seed=1)
    _, _, Z = slice_2d(loss, params, d1, d2, num=5)
    with torch.no_grad():
        assert Z[2, 2] == pytest.approx(float((net(x) ** 2).mean()), rel=1e-14)


# -----------------------------------------------------------------------------
# roughness
def test_roughness_counts_the_minima_of_a_sum_of_cosines():
    # -cos(x) - cos(y) on [-5 pi, 5 pi]^2 with step pi/4: minima at (2 pi k, 2 pi
    # l), k, l in {-2..2}.
    x = np.linspace(-5 * np.pi, 5 * np.pi, 41)
    Z = -np.cos(x)[:, None] - np.cos(x)[None, :]
    r = roughness(Z)
    assert r["num_local_minima"] == 25
    assert r["range"] == pytest.approx(4.0) and r["min"] == pytest.approx(-2.0)
    assert r["total_variation"] > 2.0


def test_roughness_of_a_bowl_and_a_plane():
    x = np.linspace(-1, 1, 21)
    bowl = x[:, None] ** 2 + 2 * x[None, :] ** 2
    r = roughness(bowl)
    assert r["num_local_minima"] == 1 and r["total_variation"] <= 2.0
    # 5-point Laplacian of a quadratic is exact: (2 + 4) h^2 with h = 0.1, over
    # the range 3.
    assert r["laplacian"] == pytest.approx(6 * 0.1**2 / 3.0, rel=1e-9)
    plane = np.repeat(x[:, None], 21, axis=1)  # tilted along the first axis only
    r = roughness(plane)
    assert r["num_local_minima"] == 0 and r["total_variation"] == pytest.approx(0.5)
    assert r["laplacian"] == pytest.approx(0.0, abs=1e-12)
    flat = roughness(np.zeros((4, 4)))
    assert flat["range"] == 0.0 and flat["total_variation"] == 0.0 and flat[
        "num_local_minima"] == 0
    with pytest.raises(ValueError, match="at least 3 x 3"):
        roughness(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="finite"):
        roughness(np.full((3, 3), np.nan))


def test_rugged_surfaces_score_higher():
    x = np.linspace(-1, 1, 31)
    smooth = x[:, None] ** 2 + x[None, :] ** 2
    rugged = smooth + 0.1 * np.sin(25 * x)[:, None] * np.sin(25 * x)[None, :]
    a, b = roughness(smooth), roughness(rugged)
    assert b["num_local_minima"] > a["num_local_minima"] == 1
    assert b["total_variation"] > a["total_variation"] and b["laplacian"] > a[
        "laplacian"]


# ------------------------------------------------------------ attention-layer helpers
def _attention_setup(kernel="softmax", seed=0):
    from lib.data import teacher_problem
    from lib.model import AttentionLayer

    problem = teacher_problem(3, 4, 3, kernel=kernel, seed=seed, device="cpu")
    return AttentionLayer(3, kernel=kernel, seed=seed + 5,
                          device="cpu"), problem.X, problem.Y


@pytest.mark.parametrize("kernel", ["softmax", "gaussian"])
def test_attention_plane_equals_slice_2d(kernel):
    from lib.landscape import attention_plane

    layer, X, Y = _attention_setup(kernel)
    centre = get_params(layer, ("W_Q", "W_K", "W_V"))
    d1, d2 = random_direction(centre, seed=1), random_direction(centre, seed=2)
    alphas, Z = attention_plane(layer, X, Y, d1, d2, span=(-0.5, 1.0), num=5)
    a_ref, _, Z_ref = slice_2d(model_loss_fn(layer, X, Y), centre, d1, d2,
                               span=(-0.5, 1.0), num=5)
    assert np.array_equal(alphas, a_ref) and np.allclose(Z, Z_ref, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="unknown parameter name 'W_X' in dir1"):
        attention_plane(layer, X, Y, {"W_X": d1["W_Q"]}, d2)


@pytest.mark.parametrize("kernel", ["softmax", "gaussian"])
def test_symmetry_directions_leave_the_loss_unchanged_to_first_order(kernel):
    from lib.hessian import flatten_params, loss_of_params
    from lib.landscape import symmetry_directions

    layer, X, Y = _attention_setup(kernel)
    names = ("W_Q", "W_K", "W_V")
    U = symmetry_directions(layer, names)
    d = layer.d
    assert U.shape == (flatten_params(layer, names).numel(),
                       d * d if kernel == "softmax" else d * (d - 1) // 2)
    assert torch.allclose(U.T @ U, torch.eye(U.shape[1], dtype=U.dtype), atol=1e-12)
    grad = torch.func.grad(loss_of_params(layer, X, Y,
                                          names))(flatten_params(layer, names))
    assert float((U.T @ grad).abs().max()) <= 1e-10 * float(grad.norm())
    with pytest.raises(ValueError, match="one-head layer"):
        symmetry_directions(layer, ("W_V", "W_Q", "W_K"))


def test_quadratic_fit():
    from lib.landscape import quadratic_fit

    t = np.linspace(-1, 2, 9)
    coef, residual = quadratic_fit(t, 3 * t**2 - t + 2)
    assert np.allclose(coef, [3, -1, 2]) and residual < 1e-12
    assert quadratic_fit(t, np.abs(t))[1] > 1e-2
    with pytest.raises(ValueError, match="same length >= 3"):
        quadratic_fit(t[:2], t[:2])


def test_roughness_convexity_relief_and_boundary():
    a = np.linspace(-1, 1, 11)
    bowl = 1.0 + a[:, None] ** 2 + a[None, :] ** 2
    r = roughness(bowl)
    assert r["non_convex_fraction"] == 0.0 and math.isclose(r["relief"], 2.0)
    assert math.isclose(r["boundary_ratio"],
                        2.0)  # the edge minimum 1 + 1 over the centre 1
    saddle = 5.0 + a[:, None] ** 2 - a[None, :] ** 2
    assert roughness(saddle)["non_convex_fraction"] == 1.0
