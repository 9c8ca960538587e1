"""Tests of lib.containment: B of the attention weights, the norm of its derivative, the
gradient
ratio and the containment condition."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lib.batched import BatchedAttentionLayer, per_model_loss
from lib.containment import (
    attention_gradient_ratio,
    b_derivative_norm,
    b_of_attention,
    containment_ratio,
)
from lib.data import stacked_random_problems
from lib.theory import batched_b_matrix


@pytest.mark.parametrize("kernel", ["softmax", "gaussian"])
def test_b_and_its_derivative(kernel):
    X, Y = stacked_random_problems(range(2), 2, 3, 4, device="cpu")
    model = BatchedAttentionLayer(2, 4, H=2, kernel=kernel, seeds=[0, 1], device="cpu")
    B = b_of_attention(model, model.W_Q.detach(), model.W_K.detach(), X)
    assert (B - batched_b_matrix(model, X)).abs().max() < 1e-13
    norm = b_derivative_norm(model, X, iters=60)
    # the exact operator norm from the full Jacobian of each model's B
    for m in range(2):
        f = lambda q, k: b_of_attention(model, q, k, X)[m].reshape(-1)  # noqa: E731
        Jq, Jk = torch.autograd.functional.jacobian(
            f, (model.W_Q.detach(), model.W_K.detach())
        )
        J = torch.cat(
            [Jq[:, m].reshape(Jq.shape[0], -1), Jk[:, m].reshape(Jk.shape[0], -1)], 1
        )
        exact = torch.linalg.matrix_norm(J, 2).item()
        assert exact * (1 - 1e-3) <= norm[m].item() <= exact * (1 + 1e-12)
    ratio = attention_gradient_ratio(model, X, Y)
    with torch.enable_grad():
        f = per_model_loss(model, X, Y)
        g = torch.autograd.grad(f[0], (model.W_Q, model.W_K))
    expected = math.sqrt(sum((t[0] ** 2).sum().item() for t in g)) / math.sqrt(
        f[0].item()
    )
    assert abs(ratio[0].item() - expected) < 1e-10


def test_containment_ratio_formula():
    out = containment_ratio(4.0, 1.0, 1.0, 0.01, 2.0, N=2)
    assert out["radius"] == pytest.approx(4 * 2 * 2 * 1 / 4)
    assert out["ratio"] == pytest.approx(0.01 * 4 / ((1 - 2**-0.5) * 2))
    with pytest.raises(ValueError, match="positive"):
        containment_ratio(np.array([0.0]), 1.0, 1.0, 1.0, 1.0, N=1)


def test_run_path_records_and_bounds():
    from lib.training_paths import decrease_ratios, path_bounds, run_path

    X, Y = stacked_random_problems(range(2), 2, 2, 4, device="cpu")
    model = BatchedAttentionLayer(
        2, 4, H=1, init="orthogonal", seeds=[3, 4], device="cpu"
    )
    run = run_path(model, X, Y, ("W_Q", "W_K", "W_V"), steps=20)
    assert run["loss"].shape == run["dB"].shape == run["da"].shape == (21, 2)
    assert run["da"][0].max() == 0 and (run["dB"][1:] > 0).all()
    assert (run["grad_a_sq"] <= run["grad_sq"] + 1e-15).all()
    # sigma_min(B_t) >= sqrt(lambda_B(0)) - ||B_t - B_0||_2 (Weyl), the step the
    # containment uses
    lam0 = run["lambda_b"][0]
    assert (np.sqrt(run["lambda_b"]) >= np.sqrt(lam0) - run["dB"] - 1e-12).all()
    product, running = path_bounds(run, N=2)
    dec = decrease_ratios(run)
    ok = (dec >= 1).all(axis=0)
    assert (run["loss"][:, ok] <= product[:, ok] * (1 + 1e-9)).all()
    assert running.shape == product.shape


def test_measured_containment_and_at_init():
    from lib.containment import containment_at_init, measured_containment
    from lib.training_paths import run_path

    X, Y = stacked_random_problems(range(2), 2, 2, 4, device="cpu")
    make = lambda: BatchedAttentionLayer(
        2,
        4,
        H=2,
        init="orthogonal",
        seeds=[3, 4],  # noqa
        device="cpu")
    run = run_path(make(), X, Y, ("W_Q", "W_K", "W_V"), steps=15)
    m = measured_containment(run, make(), X, 2)
    assert (m["weyl"] >= -1e-12).all() and (m["ratio"] > 0).all()
    assert (m["travelled"] > 0).all() and m["kept"].dtype == bool
    ratios = containment_at_init("softmax", 8, 1.0, seeds=range(2), device="cpu")
    assert ratios.shape == (2,) and (ratios > 0).all()
