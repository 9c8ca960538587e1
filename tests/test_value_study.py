"""Tests of lib.value_study (the W_V-only experiments of the wide-embedding chapter),
against direct computations with lib.theory and lib.trainer at small sizes."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lib.data import random_inputs, random_problem  # noqa: E402
from lib.model import AttentionLayer  # noqa: E402
from lib.theory import (b_matrix, optimal_values, pl_ratio,  # noqa: E402
                        predicted_rate, values_jacobian)
from lib.trainer import train  # noqa: E402
from lib.value_study import (by_ratio, contraction_records,  # noqa: E402
                             exact_loss_curves, experiment_layer, fstar_count_z,
                             gram_sandwich, mu_over_L, plot_contraction,
                             plot_loss_bounds, plot_steps, plot_transition,
                             slowest_point, threshold_report, transition_records)

KERNELS = ("softmax", "gaussian")


@pytest.mark.parametrize("kernel", KERNELS)
def test_gram_sandwich_closes_for_orthogonal_blocks(kernel):
    X = random_inputs(3, 4, 8, seed=4)
    model = AttentionLayer(8, H=2, kernel=kernel, init="orthogonal", seed=3)
    g = gram_sandwich(model, X)
    J, B = values_jacobian(model, X), b_matrix(model, X)
    direct = (J @ J.T - torch.kron(B @ B.T, torch.eye(8, dtype=B.dtype))).abs().max()
    assert direct <= 1e-12 and g["gram_err"] <= 1e-10
    assert abs(g["s_min"] - 1) < 1e-12 and abs(g["s_max"] - 1) < 1e-12
    # s_min = s_max = 1: both sides are J J^T - B B^T x I = 0 up to rounding
    assert abs(g["low"]) <= 1e-10 and abs(g["high"]) <= 1e-10


def test_gram_sandwich_sides_and_wrong_order():
    X = random_inputs(4, 5, 6, seed=1)
    model = AttentionLayer(6, H=3, d_v=4, d_out=3, kernel="softmax", seed=2)
    g = gram_sandwich(model, X)
    assert g["gram_err"] <= 1e-10 and min(g["low"], g["high"]) >= -1e-10
    assert 0 < g["s_min"] < g["s_max"] and g["wrong"] < -1e-3


def test_gram_sandwich_rejects_d_out_above_d_v():
    model = AttentionLayer(6, H=2, d_v=2, d_out=3, seed=0)
    with pytest.raises(ValueError, match="d_out <= d_v"):
        gram_sandwich(model, random_inputs(2, 3, 6, seed=0))


def test_slowest_point_makes_the_pl_inequality_an_equality():
    prob = random_problem(6, 4, 8, seed=12)
    model = AttentionLayer(8, H=2, kernel="softmax", seed=13)
    bound = predicted_rate(model, prob.X, 1.0)
    opt = optimal_values(model, prob.X, prob.Y)
    W_V = slowest_point(model, prob.X, opt.W_V, bound.mu)
    assert W_V.shape == model.W_V.shape
    assert abs(pl_ratio(model, prob.X, prob.Y, W_V, opt.loss) / bound.mu - 1) <= 1e-6
    with pytest.raises(ValueError, match="mu must be positive"):
        slowest_point(model, prob.X, opt.W_V, 0.0)


def test_experiment_layer_and_mu_over_L():
    layer = experiment_layer("gaussian", 3, 8, 2, init="lecun")
    same = AttentionLayer(8, H=2, kernel="gaussian", init="lecun", seed=1003)
    assert torch.equal(layer.W_Q, same.W_Q) and torch.equal(layer.W_O, same.W_O)
    problems = [random_problem(2, 2, 8, seed=s) for s in range(3)]
    values = mu_over_L("softmax", problems, range(3), 8, 2)
    for seed, prob, value in zip(range(3), problems, values):
        bound = predicted_rate(experiment_layer("softmax", seed, 8, 2), prob.X, 1.0)
        assert value == bound.mu / bound.L
    with pytest.raises(ValueError, match="problem per seed"):
        mu_over_L("softmax", problems[:1], range(3), 8, 2)


def test_contraction_records_obey_the_bound():
    problems = [random_problem(2, 2, 8, seed=s) for s in range(2)]
    rows = contraction_records("softmax", problems, range(2), 8, 2, 20)
    assert [r["seed"] for r in rows] == [0, 1]
    for r in rows:  # H D = 16 >= N n = 4: full rank, f* = 0
        assert r["full_rank"] and r["f_star"] <= 1e-20
        assert r["observed"] - 1e-12 <= r["all_steps"] <= r["rate"] < 1
    gamma = contraction_records("gaussian", problems, range(1), 8, 2, 5, gamma=0.1)
    assert gamma[0]["mu_over_L"] != contraction_records(
        "gaussian", problems, range(1), 8, 2, 5)[0]["mu_over_L"]
    with pytest.raises(ValueError, match="steps"):
        contraction_records("softmax", problems, range(2), 8, 2, 0)


def test_exact_loss_curves_match_the_trainer():
    prob = random_problem(2, 2, 8, seed=1)
    c = exact_loss_curves("softmax", prob, 1, 8, 2, 10, points=50)
    assert c["t"][0] == 0 and c["t"][-1] == c["horizon"] and len(c["t"]) <= 50
    assert abs(c["loss"][0] / c["f0"] - 1) <= 1e-12 and len(c["trainer"]) == 11
    assert np.all(c["loss"] <= c["bound"] * (1 + 1e-9))
    assert np.all(c["quadratic"] <= c["bound"] * (1 + 1e-12))
    model = experiment_layer("softmax", 1, 8, 2)
    L = predicted_rate(model, prob.X, 1.0).L
    direct = train(model, prob.X, prob.Y, steps=10, lr=1 / L, trainable=("W_V",)).loss
    assert np.allclose(direct, c["trainer"], rtol=1e-9)


@pytest.fixture(scope="module")
def transition():
    return transition_records("softmax", [2, 4, 8], range(2), 2, 4, 2, (10, 10**6),
                              check_steps=5)


def test_transition_records(transition):
    assert [(r["N"], r["seed"]) for r in transition] == [
        (N, s) for N in (2, 4, 8) for s in range(2)]
    for r in transition:
        assert r["ratio"] == 8 / (2 * r["N"]) and r["trainer_err"] <= 1e-9
        assert abs(r["f_star"] - r["f_star_modes"]) <= 1e-9 * r["f0"]
        assert r["steps"] <= r["steps_bound"] and set(r["final"]) == {10, 10**6}
        if r["ratio"] > 1:
            assert r["full_rank"] and r["f_star"] <= 1e-20 and r["lambda_B"] > 0
        if r["ratio"] < 1:
            assert r["f_star"] > 1e-3 * r["f0"] and r["lambda_B"] <= 1e-10
    with pytest.raises(ValueError, match="check_steps"):
        transition_records("softmax", [2], range(1), 2, 4, 2, (10,), check_steps=0)


def test_by_ratio_and_threshold_report(transition):
    x, med, lo, hi = by_ratio(transition, lambda r: r["N"])
    assert x.tolist() == [0.5, 1.0, 2.0] and med.tolist() == [8, 4, 2]
    assert np.all(lo <= med) and np.all(med <= hi)
    text = threshold_report(transition, 10, kernels=("softmax",))
    lines = text.splitlines()
    assert len(lines) == 3 and lines[0].startswith("T = 1e1, ratio > 1, Softmax")
    assert "ratio 2.00" in lines[2] and "ratio 0.50" in lines[2]
    with pytest.raises(ValueError, match="budgets"):
        threshold_report(transition, 7)


def test_fstar_count_z():
    # N = 4, n = 2, H D = 4 (D = 2): dof = (8 - 4) * 2 = 8, E f* = 1, sd = 0.5
    rows = [dict(ratio=0.5, N=4, f_star=v) for v in (1.0, 1.0, 1.5, 0.5)]
    assert fstar_count_z(rows, 2, 2, 2) == 0.0
    rows = [dict(ratio=0.5, N=4, f_star=1.5) for _ in range(4)]
    assert math.isclose(fstar_count_z(rows, 2, 2, 2), 2.0)
    with pytest.raises(ValueError, match="below the threshold"):
        fstar_count_z([dict(ratio=2.0, N=1, f_star=0.0)], 2, 2, 2)


def test_figures(transition):
    problems = [random_problem(2, 2, 8, seed=s) for s in range(2)]
    results = {k: contraction_records(k, problems, range(2), 8, 2, 3) for k in KERNELS}
    assert len(plot_contraction(results, 3).axes) == 1
    curves = {k: exact_loss_curves(k, problems[0], 0, 8, 2, 3, points=20)
              for k in KERNELS}
    assert len(plot_loss_bounds(curves, 3).axes) == 2
    rows = transition + [dict(r, kernel="gaussian") for r in transition]
    assert len(plot_transition(rows, (10, 10**6), 2, 4).axes) == 3
    assert len(plot_steps(rows, (10, 10**6)).axes) == 1
    plt.close("all")
