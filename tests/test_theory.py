"""Tests of lib.theory: the B-matrix identity, lambda_B, the W_V-only problem and its
rate."""
from __future__ import annotations

import math

import pytest
import torch

from lib.data import random_inputs, random_targets
from lib.model import AttentionLayer, squared_loss
from lib.theory import (
    b_matrix,
    lambda_b,
    optimal_values,
    predicted_rate,
    value_output_product,
    values_jacobian,
)
from lib.trainer import train
from reference import DEVICE, randn, ref_b_matrix, ref_lambda_min, weights_of

KERNELS = ["softmax", "gaussian", "gaussian_normalized"]


def layer(D, **kwargs) -> AttentionLayer:
    kwargs.setdefault("seed", 0)
    kwargs.setdefault("device", DEVICE)
    return AttentionLayer(D, **kwargs)


def inputs(N, n, D, seed=1, scale=1.0):
    return random_inputs(N, n, D, seed=seed, scale=scale, device=DEVICE)


# ------------------------------------------------------------------ the B-matrix
# identity
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("H,d_v,d_out", [(1, 3, 3), (3, 2, 5), (2, 4, 1)])
def test_predictions_equal_B_times_V(kernel, H, d_v, d_out):
    N, n, D = 3, 4, 3
    model = layer(D, H=H, d=2, d_v=d_v, d_out=d_out, kernel=kernel, seed=4)
    X = inputs(N, n, D)
    B = b_matrix(model, X)
    assert B.shape == (N * n, H * D)
    assert torch.allclose(B, ref_b_matrix(X, weights_of(model), kernel), atol=1e-12,
                          rtol=0)
    V = value_output_product(model)
    assert V.shape == (H * D, d_out)
    with torch.no_grad():
        stacked = model(X).reshape(N * n, d_out)
    assert torch.allclose(stacked, B @ V, atol=1e-12, rtol=0)


def test_value_output_product_blocks():
    model = layer(3, H=2, d_v=4, d_out=2)
    V = value_output_product(model)
    W_O = model.W_O.detach()
    for h in range(2):
        assert torch.allclose(V[3 * h:3 * (h + 1)],
                              model.W_V[h].detach() @ W_O[4 * h:4 * (h + 1)],
                              atol=1e-15)


@pytest.mark.parametrize("kernel", ["softmax", "gaussian"])
def test_lambda_b_is_min_eigenvalue_of_BBt(kernel):
    model = layer(4, H=2, kernel=kernel, seed=5)
    X = inputs(2, 3, 4, seed=2)  # H*D = 8 >= N*n = 6
    expected = ref_lambda_min(ref_b_matrix(X, weights_of(model), kernel))
    assert expected > 1e-6
    assert lambda_b(model, X) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("kernel", ["softmax", "gaussian"])
def test_lambda_b_vanishes_when_HD_below_Nn(kernel):
    model = layer(2, H=2, kernel=kernel, seed=6)
    X = inputs(3, 2, 2, seed=3)  # H*D = 4 < N*n = 6: B B^T is singular
    B = b_matrix(model, X)
    top = float(torch.linalg.eigvalsh(B @ B.T)[-1])
    assert 0.0 <= lambda_b(model, X) <= 1e-12 * top


@pytest.mark.parametrize("kernel", ["softmax", "gaussian"])
@pytest.mark.parametrize("N,n,D,H", [(2, 3, 4, 2), (2, 2, 2, 2), (1, 5, 6, 1)])
def test_lambda_b_positive_when_HD_at_least_Nn(kernel, N, n, D, H):
    """Generic (random) inputs and weights: B has full row rank, over several seeds."""
    assert H * D >= N * n
    for seed in range(4):
        model = layer(D, H=H, kernel=kernel, seed=seed)
        X = inputs(N, n, D, seed=10 + seed)
        B = b_matrix(model, X)
        top = float(torch.linalg.eigvalsh(B @ B.T)[-1])
        assert lambda_b(model, X) > 1e-8 * top


@pytest.mark.parametrize("kernel", ["softmax", "gaussian"])
def test_values_jacobian_matches_autograd(kernel):
    N, n, D, H, d_v, d_out = 2, 3, 3, 2, 2, 4
    model = layer(D, H=H, d_v=d_v, d_out=d_out, kernel=kernel, seed=7)
    X = inputs(N, n, D, seed=4)
    params = {name: p.detach() for name, p in model.named_parameters()}

    def predictions(W_V):
        return torch.func.functional_call(model, {
            **params, "W_V": W_V
        }, (X, )).reshape(-1)

    expected = torch.autograd.functional.jacobian(predictions,
                                                  params["W_V"].clone()).reshape(
                                                      N * n * d_out, -1)
    J = values_jacobian(model, X)
    assert J.shape == (N * n * d_out, H * D * d_v)
    assert torch.allclose(J, expected, atol=1e-12, rtol=0)


def test_theory_rejects_bad_input():
    model = layer(3)
    with pytest.raises(ValueError, match=r"X must have shape \(\*, \*, 3\)"):
        b_matrix(model, randn(2, 2, 4))
    with pytest.raises(TypeError, match="model must be a lib.model.AttentionLayer"):
        lambda_b(torch.nn.Linear(3, 3), randn(2, 2, 3))
    with pytest.raises(ValueError, match="lr"):
        predicted_rate(model, randn(2, 2, 3), lr=0.0)
    with pytest.raises(ValueError, match=r"Y must have shape \(2, 2, 3\)"):
        optimal_values(model, randn(2, 2, 3), randn(2, 2, 2))


# ------------------------------------------------------------------ predicted rate
def _jacobian_eigs(model, X):
    """Eigenvalues of J J^T / N, J from autograd (independent of lib.theory)."""
    params = {name: p.detach() for name, p in model.named_parameters()}

    def predictions(W_V):
        return torch.func.functional_call(model, {
            **params, "W_V": W_V
        }, (X, )).reshape(-1)

    J = torch.autograd.functional.jacobian(predictions, params["W_V"].clone()).reshape(
        -1, params["W_V"].numel())
    return torch.linalg.eigvalsh(J @ J.T) / X.shape[0]


@pytest.mark.parametrize("kernel", ["softmax", "gaussian"])
@pytest.mark.parametrize("N,n,D,H,d_out", [(2, 3, 4, 2, 2), (2, 2, 4, 2, 4),
                                           (3, 2, 2, 1, 1)])
def test_predicted_rate_constants(kernel, N, n, D, H, d_out):
    model = layer(D, H=H, d_out=d_out, kernel=kernel, seed=8)
    X = inputs(N, n, D, seed=5)
    eigs = _jacobian_eigs(model, X)
    bound = predicted_rate(model, X, lr=0.1)
    assert bound.L == pytest.approx(float(eigs[-1]), rel=1e-9)
    positive = eigs[eigs > 1e-10 * eigs[-1]]
    assert bound.mu == pytest.approx(float(positive[0]), rel=1e-6)
    assert bound.full_rank == (len(positive) == len(eigs))
    assert bound.mu_lower <= bound.mu * (1 + 1e-9) + 1e-14
    assert bound.lambda_b == pytest.approx(lambda_b(model, X), rel=1e-12, abs=1e-15)
    assert bound.max_lr == pytest.approx(2 / bound.L, rel=1e-15)
    if H * D < N * n:
        assert bound.mu_lower == pytest.approx(0.0, abs=1e-12)


def test_rate_below_one_iff_lr_below_two_over_L():
    model = layer(4, H=2, d_out=2, seed=9)
    X = inputs(2, 3, 4, seed=6)
    L = predicted_rate(model, X, lr=1.0).L
    for factor in (0.01, 0.5, 1.0, 1.5, 1.99):
        bound = predicted_rate(model, X, lr=factor / L)
        assert 0 <= bound.rate < 1 and math.isfinite(bound.steps_to(1e-6))
    for factor in (2.01, 3.0, 10.0):
        bound = predicted_rate(model, X, lr=factor / L)
        assert bound.rate > 1 and bound.steps_to(1e-6) == float("inf")
    # with lr = 1/L the rate is 1 - mu/L, and steps_to(r) = log r / log rate
    bound = predicted_rate(model, X, lr=1 / L)
    assert bound.rate == pytest.approx(1 - bound.mu / L, rel=1e-12)
    assert bound.steps_to(1e-6) == pytest.approx(
        math.log(1e-6) / math.log(bound.rate), rel=1e-12)


# ------------------------------------------------------------------ GD on W_V alone
# Well-conditioned wide problems (H*D >= N*n, B of full row rank), one per kernel:
# (kernel, N, n, D,
# H, d_out, init, qk_scale, input scale). Condition numbers L/mu: about 23 and 42.
WIDE = [
    ("softmax", 2, 2, 8, 2, 1, "orthogonal", 3.0, 2.0),
    ("gaussian", 2, 2, 6, 2, 1, "lecun", 0.5, 2.0),
]
RATE_SLACK = (
    1e-9  # observed factor <= rate + slack, on steps where f_t - f* > 1e-10 (f_0 - f*)
)


@pytest.mark.parametrize("case", WIDE, ids=[c[0] for c in WIDE])
def test_gd_on_values_reaches_zero_loss_at_the_predicted_rate(case):
    kernel, N, n, D, H, d_out, init, qk_scale, scale = case
    model = layer(D, H=H, d_out=d_out, kernel=kernel, init=init, qk_scale=qk_scale,
                  seed=3)
    X = inputs(N, n, D, seed=1, scale=scale)
    Y = random_targets(N, n, d_out, seed=2, device=DEVICE)
    assert H * D >= N * n
    L = predicted_rate(model, X, lr=1.0).L
    bound = predicted_rate(model, X, lr=1.0 / L)
    assert bound.full_rank and bound.lambda_b > 0 and bound.rate < 1
    optimum = optimal_values(model, X, Y)
    assert optimum.loss <= 1e-20  # full row rank: every target is reachable
    steps = math.ceil(bound.steps_to(1e-12))
    assert steps <= 2000, "test problem too ill-conditioned to stay fast"
    history = train(model, X, Y, steps=steps, lr=1.0 / L, trainable=("W_V",))
    assert history.status == "max_steps"
    f0 = history.loss[0]
    # The bound guarantees f_T <= rate^T f_0 <= 1e-12 f_0.
    assert history.final_loss <= 1e-12 * f0 + 1e-24
    gaps = history.loss
    factors = history.contraction_factors(0.0)
    checked = [(t, c) for t, c in enumerate(factors) if gaps[t] > 1e-10 * f0]
    assert len(checked) > 20
    worst = max(c for _, c in checked)
    assert (
        worst <= bound.rate + RATE_SLACK
    ), f"observed contraction {worst:.6f} > bound {bound.rate:.6f}"


@pytest.mark.parametrize("kernel", ["softmax", "gaussian"])
def test_optimal_values_is_a_stationary_point(kernel):
    model = layer(2, H=1, d_out=1, kernel=kernel, seed=4)
    X = inputs(6, 2, 2, seed=7)
    Y = random_targets(6, 2, 1, seed=8, device=DEVICE)
    optimum = optimal_values(model, X, Y)
    assert optimum.W_V.shape == model.W_V.shape
    with torch.no_grad():
        model.W_V.copy_(optimum.W_V)
    loss = squared_loss(model(X), Y)
    assert float(loss.detach()) == pytest.approx(optimum.loss, rel=1e-10)
    (grad,) = torch.autograd.grad(loss, model.W_V)
    assert float(grad.norm()) <= 1e-10
    # any perturbation of W_V increases the loss
    with torch.no_grad():
        model.W_V.add_(1e-3 * randn(*model.W_V.shape, seed=9))
        assert float(squared_loss(model(X), Y)) > optimum.loss


# Narrow problems (H*D < N*n): (kernel, N, n, D, H, d_out, init, qk_scale, input scale).
NARROW = [
    ("softmax", 6, 2, 2, 1, 1, "lecun", 1.0, 2.0),
    ("gaussian", 6, 2, 2, 1, 1, "lecun", 0.5, 1.0),
]


@pytest.mark.parametrize("case", NARROW, ids=[c[0] for c in NARROW])
def test_gd_on_values_converges_to_positive_optimum_when_narrow(case):
    kernel, N, n, D, H, d_out, init, qk_scale, scale = case
    model = layer(D, H=H, d_out=d_out, kernel=kernel, init=init, qk_scale=qk_scale,
                  seed=3)
    X = inputs(N, n, D, seed=1, scale=scale)
    Y = random_targets(N, n, d_out, seed=2, device=DEVICE)
    assert H * D < N * n
    L = predicted_rate(model, X, lr=1.0).L
    bound = predicted_rate(model, X, lr=1.0 / L)
    assert not bound.full_rank and bound.lambda_b <= 1e-12 * L * N
    optimum = optimal_values(model, X, Y)
    assert optimum.loss > 1e-2
    steps = math.ceil(bound.steps_to(1e-12))
    assert steps <= 2000
    history = train(model, X, Y, steps=steps, lr=1.0 / L, trainable=("W_V",))
    gap0 = history.loss[0] - optimum.loss
    assert gap0 > 0
    assert abs(history.final_loss - optimum.loss) <= 1e-10 * gap0 + 1e-13
    # the restricted PL bound holds here too (mu = smallest positive eigenvalue)
    factors = history.contraction_factors(optimum.loss)
    checked = [
        c for t, c in enumerate(factors) if history.loss[t] - optimum.loss > 1e-8 * gap0
    ]
    assert checked and max(checked) <= bound.rate + RATE_SLACK


# ------------------------------------------------- batched B matrix and the W_V
# closed form
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("shared", [True, False])
def test_batched_b_matrix_and_gram_extremes_equal_per_model(kernel, shared):
    from lib.batched import BatchedAttentionLayer
    from lib.theory import batched_b_matrix, batched_gram_extremes, sigma_min_wo

    M, N, n, D = 3, 2, 3, 4
    model = BatchedAttentionLayer(M, D, H=2, d_v=3, d_out=2, kernel=kernel,
                                  seeds=[4, 5, 6], device=DEVICE)
    X = randn(N, n, D, seed=3) if shared else randn(M, N, n, D, seed=3)
    B = batched_b_matrix(model, X)
    lam_min, lam_max = batched_gram_extremes(model, X)
    sigma = sigma_min_wo(model)
    assert B.shape == (M, N * n,
                       2 * D) and lam_min.shape == lam_max.shape == sigma.shape == (M, )
    for m, single in enumerate(model.layers()):
        Xm = X if shared else X[m]
        assert torch.allclose(B[m], b_matrix(single, Xm), atol=1e-12)
        assert math.isclose(lam_min[m].item(), lambda_b(single, Xm), rel_tol=1e-8,
                            abs_tol=1e-12)
        eig = torch.linalg.eigvalsh(B[m] @ B[m].T)
        assert math.isclose(lam_max[m].item(), eig[-1].item(), rel_tol=1e-10)
        assert math.isclose(sigma[m].item(), sigma_min_wo(single), rel_tol=1e-12)
        assert math.isclose(sigma_min_wo(single),
                            predicted_rate(single, Xm, lr=0.1).sigma_min_wo)
    with pytest.raises(TypeError, match="BatchedAttentionLayer"):
        batched_b_matrix(model.layer(0), X)


def test_sigma_min_wo_is_zero_when_d_out_exceeds_d_v():
    from lib.theory import sigma_min_wo

    assert sigma_min_wo(layer(4, d_v=2, d_out=3)) == 0.0
    assert math.isclose(sigma_min_wo(layer(4, H=2, init="orthogonal")), 1.0,
                        rel_tol=1e-12)


@pytest.mark.parametrize("kernel", ["softmax", "gaussian"])
@pytest.mark.parametrize("N", [2, 6])  # wide (f* = 0) and narrow (f* > 0)
def test_value_modes_closed_form_equals_gd_on_values(kernel, N):
    from lib.theory import ValueModes

    D = 6
    model = layer(D, H=2, kernel=kernel, init="orthogonal", seed=17)
    X, Y = randn(N, 3, D, seed=16), randn(N, 3, D, seed=18)
    modes = ValueModes(model, X, Y)
    assert modes.mu <= modes.L and (modes.f_star > 1e-8) == (N * 3 > 2 * D)
    lr = 1.0 / modes.L
    history = train(model, X, Y, steps=200, lr=lr, trainable=("W_V",))
    closed = modes.loss(lr, range(len(history.loss)))
    assert max(abs(a - b) / b for a, b in zip(history.loss, closed)) <= 1e-8
    assert math.isclose(modes.f_star,
                        optimal_values(model, X, Y).loss, rel_tol=1e-6, abs_tol=1e-12)
    t = modes.steps_to(lr, 1e-6)
    assert modes.gap(lr, t) <= 1e-6 < modes.gap(lr, t - 1)
    assert modes.worst_factor(lr) <= (1 - modes.mu / modes.L) ** 2 + 1e-12
    with pytest.raises(ValueError, match="Y must have shape"):
        ValueModes(model, X, Y[:, :2])


@pytest.mark.parametrize("kernel", ["softmax", "gaussian"])
def test_pl_ratio_is_at_least_mu_and_tight_in_the_slowest_direction(kernel):
    from lib.theory import pl_ratio

    model = layer(8, H=2, kernel=kernel, seed=13)
    X, Y = randn(6, 4, 8, seed=12), randn(6, 4, 8, seed=14)
    bound, opt = predicted_rate(model, X, 1.0), optimal_values(model, X, Y)
    gen = torch.Generator().manual_seed(11)
    for _ in range(20):
        W_V = torch.randn(model.W_V.shape, generator=gen,
                          dtype=torch.float64) / math.sqrt(8)
        assert pl_ratio(model, X, Y, W_V, opt.loss) >= bound.mu * (1 - 1e-9)
    _, sv, Vh = torch.linalg.svd(values_jacobian(model, X), full_matrices=False)
    v = Vh[int((sv > 1e-10 * sv[0]).sum()) - 1].reshape(model.W_V.shape)
    tight = pl_ratio(model, X, Y, opt.W_V + v / math.sqrt(bound.mu),
                     opt.loss) / bound.mu
    assert abs(tight - 1) <= 1e-6


def test_notation_shapes_follow_the_table():
    from lib.theory import notation_shapes

    N, n, D, H, d, d_v, d_out = 3, 4, 5, 2, 3, 6, 2
    X, Y = random_inputs(N, n, D, seed=0), random_targets(N, n, d_out, seed=1)
    model = AttentionLayer(D, H=H, d=d, d_v=d_v, d_out=d_out, seed=0)
    shapes = notation_shapes(model, X, Y)
    assert shapes["model.W_O"] == ((H * d_v, d_out), (H * d_v, d_out))
    assert shapes["b_matrix(model, X)"][0] == (N * n, H * D)
    assert shapes["model.attention(X)"][0] == (N, H, n, n)
    assert shapes["squared_loss(model(X), Y)"] == ((), ())
    assert len(shapes) == 8 and all(want == got for want, got in shapes.values())
    with pytest.raises(ValueError, match="X"):
        notation_shapes(model, X[..., :4], Y)
