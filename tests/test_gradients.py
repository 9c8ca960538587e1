"""Tests of lib.gradients: autograd gradients of the loss and the finite-difference
check."""
from __future__ import annotations

import pytest
import torch

from lib.data import teacher_problem
from lib.gradients import directional_check, loss_gradients
from lib.model import WEIGHT_NAMES, AttentionLayer

CPU = torch.device("cpu")


def _setup(kernel="softmax"):
    problem = teacher_problem(3, 4, 5, kernel=kernel, H=2, d_out=3, seed=0, device=CPU)
    return AttentionLayer(5, H=2, d_out=3, kernel=kernel, seed=7,
                          device=CPU), problem.X, problem.Y


def test_loss_gradients_of_the_output_weights_is_the_linear_formula():
    model, X, Y = _setup()
    grads = loss_gradients(model, X, Y)
    assert list(grads) == list(WEIGHT_NAMES)
    with torch.no_grad():
        C = model.heads(X).permute(0, 2, 1, 3).flatten(2)  # (N, n, H*d_v)
        R = C @ model.W_O - Y
        expected = torch.einsum("inc,ino->co", C, R) / X.shape[0]
    assert torch.allclose(grads["W_O"], expected, atol=1e-12)
    assert list(loss_gradients(model, X, Y, "W_V")) == ["W_V"]
    with pytest.raises(ValueError, match="unknown name 'W_X'"):
        loss_gradients(model, X, Y, ("W_X",))


@pytest.mark.parametrize("kernel", ["softmax", "gaussian"])
def test_directional_check_accepts_the_gradient_and_rejects_a_wrong_one(kernel):
    model, X, Y = _setup(kernel)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    for name in WEIGHT_NAMES:
        assert directional_check(model, X, Y, name) < 1e-6
    wrong = 1.5 * loss_gradients(model, X, Y, ("W_Q",))["W_Q"]
    assert directional_check(model, X, Y, "W_Q", grad=wrong) > 1e-2
    assert all(torch.equal(before[k], v) for k, v in model.named_parameters())
    with pytest.raises(ValueError, match="grad must be a tensor of W_Q's shape"):
        directional_check(model, X, Y, "W_Q", grad=wrong[0])
    with pytest.raises(TypeError, match="n_dirs must be a positive integer"):
        directional_check(model, X, Y, "W_Q", n_dirs=0.5)


@pytest.mark.parametrize("kernel", ["softmax", "gaussian"])
def test_hand_derived_gradients_equal_autograd(kernel):
    from lib.gradients import query_gradient, value_output_gradients

    model, X, Y = _setup(kernel)
    model.set_kernel(kernel, gamma=0.3 if kernel == "gaussian" else None)
    grads = loss_gradients(model, X, Y)
    grad_V, grad_O = value_output_gradients(model, X, Y)
    assert torch.allclose(grad_V, grads["W_V"], atol=1e-12)
    assert torch.allclose(grad_O, grads["W_O"], atol=1e-12)
    assert torch.allclose(query_gradient(model, X, Y), grads["W_Q"], atol=1e-12)
    model.set_kernel("gaussian_normalized")
    with pytest.raises(ValueError, match="query_gradient covers"):
        query_gradient(model, X, Y)


def test_loss_and_gradients_at_other_weights_leaves_the_model_unchanged():
    from lib.gradients import loss_and_gradients
    from lib.model import squared_loss

    model, X, Y = _setup()
    W_V = 2 * model.W_V.detach().clone()
    before = model.W_V.detach().clone()
    loss, grads = loss_and_gradients(model, X, Y, "W_V", at={"W_V": W_V})
    assert torch.equal(model.W_V, before)
    with torch.no_grad():
        model.W_V.copy_(W_V)
    assert abs(loss - squared_loss(model(X), Y).item()) < 1e-12
    assert torch.allclose(grads["W_V"],
                          loss_gradients(model, X, Y, "W_V")["W_V"], atol=1e-12)
    with pytest.raises(ValueError, match="unknown name 'W_Z' in at"):
        loss_and_gradients(model, X, Y, "W_V", at={"W_Z": W_V})
