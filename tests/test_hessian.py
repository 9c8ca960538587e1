"""Tests of lib.hessian: Hessians, Hessian-vector products and extreme eigenvalues of
the loss."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from lib.data import random_problem, teacher_problem
from lib.hessian import (
    curvature_summary,
    extreme_eigenvalues,
    flatten_params,
    full_hessian,
    hessian_spectrum,
    hvp,
    loss_of_params,
    unflatten_params,
)
from lib.model import AttentionLayer, squared_loss
from lib.theory import values_jacobian

CPU = torch.device("cpu")


def _setup(kernel="softmax", N=3, n=3, D=4, H=1, seed=0):
    problem = random_problem(N, n, D, seed=seed, device=CPU)
    model = AttentionLayer(D, H=H, kernel=kernel, seed=seed + 10, device=CPU)
    return model, problem.X, problem.Y


def _autograd_gradient(model, X, Y, names, vector):
    """The gradient by plain autograd on a copy of the model holding ``vector`` (an
    independent path)."""
    copy = AttentionLayer(model.D, H=model.H, kernel=model.kernel, seed=0, device=CPU)
    copy.load_state_dict(model.state_dict())
    with torch.no_grad():
        for name, value in unflatten_params(model, names, vector).items():
            getattr(copy, name).copy_(value)
    loss = squared_loss(copy(X), Y)
    return torch.cat([
        g.reshape(-1)
        for g in torch.autograd.grad(loss, [getattr(copy, n) for n in names])
    ])


def test_flatten_unflatten_round_trip():
    model, _, _ = _setup(H=2)
    names = ("W_V", "W_Q")
    w = flatten_params(model, names)
    assert w.shape == (model.W_V.numel() + model.W_Q.numel(),)
    parts = unflatten_params(model, names, w)
    assert list(parts) == list(names)
    assert torch.equal(parts["W_V"], model.W_V.detach()) and torch.equal(
        parts["W_Q"], model.W_Q.detach())
    w[0] = 123.0  # a copy: the model is untouched
    assert model.W_V.detach().reshape(-1)[0] != 123.0
    with pytest.raises(ValueError, match="unknown parameter name 'W_X'"):
        flatten_params(model, ("W_X",))
    with pytest.raises(ValueError, match=r"vector must have shape \(32,\)"):
        unflatten_params(model, "W_V", torch.zeros(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="distinct"):
        flatten_params(model, ("W_V", "W_V"))


def test_loss_of_params_matches_the_model_and_keeps_other_weights_fixed():
    model, X, Y = _setup()
    f = loss_of_params(model, X, Y, ("W_Q", "W_O"))
    w = flatten_params(model, ("W_Q", "W_O"))
    assert torch.allclose(f(w), squared_loss(model(X), Y), rtol=1e-14, atol=0)
    before = squared_loss(model(X), Y).detach()
    with torch.no_grad():
        model.W_V.mul_(2.0)  # the closure holds copies of the other weights
    assert torch.allclose(f(w), before, rtol=1e-14, atol=0)


@pytest.mark.parametrize("kernel", ["softmax", "gaussian"])
def test_full_hessian_equals_finite_differences_of_gradients(kernel):
    model, X, Y = _setup(kernel)
    names = ("W_Q", "W_V")
    Hm = full_hessian(model, X, Y, names)
    w = flatten_params(model, names)
    assert Hm.shape == (w.numel(), w.numel())
    assert torch.equal(Hm, Hm.T)
    h = 1e-5
    columns = []
    for j in range(w.numel()):
        e = torch.zeros_like(w)
        e[j] = h
        columns.append(
            (_autograd_gradient(model, X, Y, names, w + e) - _autograd_gradient(
                model, X, Y, names, w - e)) / (2 * h))
    fd = torch.stack(columns, dim=1)
    err = float((Hm - fd).abs().max() / Hm.abs().max())
    assert err < 1e-7, err  # central differences: O(h^2) plus rounding eps / h


@pytest.mark.parametrize("kernel", ["softmax", "gaussian"])
def test_hvp_equals_hessian_times_vector(kernel):
    model, X, Y = _setup(kernel, H=2)
    names = ("W_Q", "W_K", "W_O")
    Hm = full_hessian(model, X, Y, names)
    v = torch.randn(Hm.shape[0], generator=torch.Generator().manual_seed(3),
                    dtype=torch.float64)
    torch.testing.assert_close(hvp(model, X, Y, names, v), Hm @ v, rtol=1e-10,
                               atol=1e-12)
    with pytest.raises(ValueError, match="v must be a tensor of shape"):
        hvp(model, X, Y, names, v[:-1])


def test_values_only_hessian_is_the_known_quadratic():
    # With only W_V trainable, f(w) = 1/(2N) ||J w - y||^2 exactly, so the Hessian
    # is J^T J / N.
    model, X, Y = _setup(H=2)
    J = values_jacobian(model, X)
    expected = J.T @ J / X.shape[0]
    Hm = full_hessian(model, X, Y, ("W_V",))
    torch.testing.assert_close(Hm, expected, rtol=1e-12, atol=1e-13)


def test_hessian_of_a_custom_quadratic_module():
    class Quadratic(nn.Module):
        """Prediction A^{1/2} w (as a 1 x 1 x P 'sequence'): squared loss 0.5
        w^T A w against zero targets."""

        def __init__(self, root):
            super().__init__()
            self.root = root
            self.w = nn.Parameter(torch.randn(root.shape[0], dtype=torch.float64))

        def forward(self, X):
            return (self.root @ self.w).reshape(1, 1, -1)

    gen = torch.Generator().manual_seed(0)
    B = torch.randn(5, 5, generator=gen, dtype=torch.float64)
    A = B.T @ B
    root = torch.linalg.cholesky(A).T  # root^T root = A
    model = Quadratic(root)
    Hm = full_hessian(model, torch.zeros(1, 1, 1, dtype=torch.float64),
                      torch.zeros(1, 1, 5, dtype=torch.float64), ("w", ))
    torch.testing.assert_close(Hm, A, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel", ["softmax", "gaussian"])
def test_extreme_eigenvalues_match_the_full_spectrum(kernel):
    problem = teacher_problem(3, 3, 4, kernel=kernel, seed=2, device=CPU)
    model = AttentionLayer(4, H=2, kernel=kernel, seed=7, device=CPU)
    names = ("W_Q", "W_K", "W_V")  # P = 96
    spectrum = hessian_spectrum(model, problem.X, problem.Y, names)
    assert torch.all(spectrum[1:] >= spectrum[:-1])  # ascending
    top, bottom = extreme_eigenvalues(model, problem.X, problem.Y, names, k=2, iters=96,
                                      tol=1e-10)
    scale = float(spectrum.abs().max())
    # Tolerance: 1e-8 x the spectral radius (Lanczos residual bound 1e-10 x
    # radius, plus rounding).
    torch.testing.assert_close(top, spectrum.flip(0)[:2], rtol=0, atol=1e-8 * scale)
    torch.testing.assert_close(bottom, spectrum[:2], rtol=0, atol=1e-8 * scale)


def test_extreme_eigenvalues_converge_early_and_warn_when_not():
    model, X, Y = _setup(H=2)
    names = ("W_Q", "W_K", "W_V", "W_O")
    spectrum = hessian_spectrum(model, X, Y, names)
    top, bottom = extreme_eigenvalues(model, X, Y, names, k=1, iters=60, tol=1e-6)
    scale = float(spectrum.abs().max())
    assert abs(float(top[0]) - float(spectrum[-1])) <= 1e-5 * scale
    with pytest.warns(RuntimeWarning, match="Lanczos did not converge"):
        extreme_eigenvalues(model, X, Y, names, k=1, iters=3, tol=1e-12)
    _, _, info = extreme_eigenvalues(model, X, Y, names, k=1, iters=60, tol=1e-6,
                                     with_info=True)
    assert (
        info.converged and 2 <= info.steps <= 60 and info.residual <= 1e-6 * info.scale
    )
    with warnings.catch_warnings():
        warnings.simplefilter(
            "error")  # with_info reports non-convergence in info, not by a warning
        top3, _, info = extreme_eigenvalues(model, X, Y, names, k=1, iters=3, tol=1e-12,
                                            with_info=True)
    assert not info.converged and info.steps == 3 and info.residual > 1e-12 * info.scale
    assert torch.isfinite(top3).all()
    with pytest.raises(ValueError, match="k = 200 exceeds"):
        extreme_eigenvalues(model, X, Y, ("W_Q",), k=200)


def test_curvature_summary():
    eigs = torch.tensor([-2.0, -1e-12, 0.0, 1e-13, 0.5, 3.0], dtype=torch.float64)
    summary = curvature_summary(eigs, tol=1e-9)
    assert summary["top"] == 3.0 and summary["bottom"] == -2.0
    assert summary["num_negative"] == 1 and summary["num_zero"] == 3 and summary[
        "num_positive"] == 2
    assert summary["negative_fraction"] == pytest.approx(1 / 6)
    default = curvature_summary(eigs)  # relative threshold 1e-8 x max|lambda|
    assert default["tol"] == pytest.approx(3e-8) and default["num_zero"] == 3
    with pytest.raises(ValueError, match="tol must be a finite number >= 0"):
        curvature_summary(eigs, tol=-1.0)


# --------------------------------------------- batched Hessians and power iteration
def _batched_setup(kernel, M=3, N=2, n=3, D=3, H=2):
    from lib.batched import BatchedAttentionLayer

    X = torch.stack([random_problem(N, n, D, seed=s, device=CPU).X for s in range(M)])
    Y = torch.stack([random_problem(N, n, D, seed=s, device=CPU).Y for s in range(M)])
    model = BatchedAttentionLayer(M, D, H=H, kernel=kernel, seeds=range(20, 20 + M),
                                  device=CPU)
    return model, X, Y


@pytest.mark.parametrize("kernel", ["softmax", "gaussian"])
@pytest.mark.parametrize("names", [("W_Q", "W_K"), ("W_V", ),
                                   ("W_Q", "W_K", "W_V", "W_O")])
def test_batched_hessians_equal_full_hessian_per_model(kernel, names):
    from lib.hessian import batched_hessians

    model, X, Y = _batched_setup(kernel)
    flags = [p.requires_grad for p in model.parameters()]
    Hs = batched_hessians(model, X, Y, names)
    assert [p.requires_grad for p in model.parameters()] == flags
    for m, layer in enumerate(model.layers()):
        assert torch.allclose(Hs[m], full_hessian(layer, X[m], Y[m], names), rtol=1e-9,
                              atol=1e-10)
    single = batched_hessians(model.layer(0), X[0], Y[0],
                              names)  # a single model: M = 1
    assert single.shape == (1, ) + Hs.shape[1:] and torch.allclose(
        single[0], Hs[0], atol=1e-10)
    with pytest.raises(ValueError, match="distinct"):
        batched_hessians(model, X, Y, ("W_Q", "W_Q"))


@pytest.mark.parametrize("kernel", ["softmax", "gaussian"])
def test_top_eigenvalue_and_smoothness_match_the_exact_spectrum(kernel):
    from lib.hessian import smoothness, top_eigenvalue

    model, X, Y = _batched_setup(kernel)
    names = ("W_Q", "W_K", "W_V", "W_O")
    top = top_eigenvalue(model, X, Y, names, iters=300)
    L = smoothness(model, X, Y, names, iters=300)
    assert top.shape == L.shape == (model.M,)
    for m, layer in enumerate(model.layers()):
        eigs = hessian_spectrum(layer, X[m], Y[m], names)
        dominant = eigs[eigs.abs().argmax()].item()
        assert abs(top[m].item() - dominant) <= 1e-3 * abs(dominant)
        assert abs(L[m].item() - abs(dominant)) <= 1e-3 * abs(dominant)
        single = top_eigenvalue(layer, X[m], Y[m], names, iters=300, seed=m)
        assert isinstance(single,
                          float) and abs(single - dominant) <= 1e-3 * abs(dominant)
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        smoothness(model, X, Y, names, seed=-1)
    with pytest.raises(TypeError, match="iters must be a positive integer"):
        top_eigenvalue(model, X, Y, names, iters=2.5)


def test_hessian_of_empty_data_is_rejected():
    model, X, Y = _setup()
    with pytest.raises(ValueError, match="X must not be empty"):
        full_hessian(model, X[:0], Y[:0], ("W_V",))
