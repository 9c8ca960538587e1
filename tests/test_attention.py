"""Tests of lib.attention: the Softmax and Gaussian kernels, distances, names."""
from __future__ import annotations

import math
import resource

import pytest
import torch
from torch.overrides import TorchFunctionMode

from lib.attention import (
    KERNELS,
    default_gamma,
    gaussian_kernel,
    get_kernel,
    kernel_names,
    pairwise_sq_distances,
    softmax_kernel,
)
from reference import (
    F64,
    randn,
    ref_gaussian_kernel,
    ref_softmax_kernel,
    ref_sq_distances,
)

TOL = 1e-12  # float64 agreement with the reference loops


# ------------------------------------------------------------------ against the
# reference
@pytest.mark.parametrize("n,d", [(1, 1), (1, 3), (4, 2), (5, 7)])
def test_softmax_matches_reference(n, d):
    Q, K = randn(n, d, seed=1), randn(n, d, seed=2)
    assert torch.allclose(softmax_kernel(Q, K), ref_softmax_kernel(Q, K), atol=TOL,
                          rtol=0)


@pytest.mark.parametrize("n,d", [(1, 1), (1, 3), (4, 2), (5, 7)])
@pytest.mark.parametrize("normalize", [False, True])
def test_gaussian_matches_reference(n, d, normalize):
    Q, K = randn(n, d, seed=3), randn(n, d, seed=4)
    got = gaussian_kernel(Q, K, normalize=normalize)
    assert torch.allclose(got, ref_gaussian_kernel(Q, K, normalize=normalize), atol=TOL,
                          rtol=0)


def test_kernels_batch_over_leading_axes():
    Q, K = randn(2, 3, 4, 5, seed=5), randn(2, 3, 4, 5, seed=6)
    for fn, ref in ((softmax_kernel, ref_softmax_kernel), (gaussian_kernel,
                                                           ref_gaussian_kernel)):
        S = fn(Q, K)
        assert S.shape == (2, 3, 4, 4)
        for a in range(2):
            for b in range(3):
                assert torch.allclose(S[a, b], ref(Q[a, b], K[a, b]), atol=TOL, rtol=0)


def test_pairwise_sq_distances_matches_reference():
    Q, K = randn(6, 4, seed=7, scale=3.0), randn(6, 4, seed=8, scale=3.0)
    assert torch.allclose(pairwise_sq_distances(Q, K), ref_sq_distances(Q, K),
                          atol=1e-11, rtol=1e-12)


# ------------------------------------------------------------------ properties
def test_softmax_rows_sum_to_one():
    S = softmax_kernel(randn(3, 6, 4, seed=9, scale=4.0),
                       randn(3, 6, 4, seed=10, scale=4.0))
    assert torch.allclose(S.sum(-1), torch.ones(3, 6, dtype=F64), atol=1e-12, rtol=0)
    assert bool((S >= 0).all())


def test_gaussian_entries_in_unit_interval_and_one_on_coincident_points():
    Q = randn(6, 3, seed=11)
    K = randn(6, 3, seed=12)
    K[2] = Q[4]  # q_4 = k_2
    K[5] = Q[0]  # q_0 = k_5
    S = gaussian_kernel(Q, K)
    assert bool((S > 0).all()) and bool((S <= 1).all())
    # Entries equal 1 where q_k = k_j (tolerance 1e-12), and only there.
    assert abs(float(S[4, 2]) - 1.0) <= 1e-12
    assert abs(float(S[0, 5]) - 1.0) <= 1e-12
    mask = torch.ones_like(S, dtype=torch.bool)
    mask[4, 2] = mask[0, 5] = False
    assert float(S[mask].max()) < 1 - 1e-6
    # Q = K: the diagonal is 1.
    S_self = gaussian_kernel(Q, Q)
    assert torch.allclose(torch.diagonal(S_self), torch.ones(6, dtype=F64), atol=1e-12,
                          rtol=0)


def test_default_gamma_value():
    assert default_gamma(16) == pytest.approx(1 / 8, rel=1e-15)
    assert default_gamma(3) == pytest.approx(1 / (2 * math.sqrt(3)), rel=1e-15)


def test_gaussian_uses_default_gamma():
    Q, K = randn(5, 9, seed=13), randn(5, 9, seed=14)
    expected = torch.exp(-(1 /
                           (2 * 3.0)) * ref_sq_distances(Q, K))  # d = 9: gamma = 1/6
    assert torch.allclose(gaussian_kernel(Q, K), expected, atol=TOL, rtol=0)


@pytest.mark.parametrize("gamma", [0.05, 0.7, 3.0])
def test_gaussian_uses_explicit_gamma(gamma):
    Q, K = randn(5, 4, seed=15), randn(5, 4, seed=16)
    expected = torch.exp(-gamma * ref_sq_distances(Q, K))
    assert torch.allclose(gaussian_kernel(Q, K, gamma=gamma), expected, atol=TOL,
                          rtol=0)
    # and it differs from the default
    assert not torch.allclose(gaussian_kernel(Q, K, gamma=gamma), gaussian_kernel(Q, K),
                              atol=1e-6)


@pytest.mark.parametrize("gamma", [0, -1.0, float("nan"), float("inf")])
def test_gaussian_rejects_bad_gamma(gamma):
    with pytest.raises(ValueError, match="gamma"):
        gaussian_kernel(randn(3, 2), randn(3, 2, seed=1), gamma=gamma)


def test_gaussian_normalized_rows_sum_to_one_and_equal_row_normalised_kernel():
    Q, K = randn(2, 7, 3, seed=17, scale=2.0), randn(2, 7, 3, seed=18, scale=2.0)
    for gamma in (None, 0.4):
        S = gaussian_kernel(Q, K, gamma=gamma)
        S_norm = gaussian_kernel(Q, K, gamma=gamma, normalize=True)
        assert torch.allclose(S_norm.sum(-1), torch.ones(2, 7, dtype=F64), atol=1e-12,
                              rtol=0)
        assert torch.allclose(S_norm, S / S.sum(-1, keepdim=True), atol=1e-12, rtol=0)
        assert torch.allclose(
            get_kernel("gaussian_normalized")(Q, K, gamma=gamma), S_norm, atol=0,
            rtol=0)


def test_gaussian_is_softmax_numerator_times_norm_factors():
    """S_gauss = exp(q.k/sqrt d) exp(-|q|^2/(2 sqrt d)) exp(-|k|^2/(2 sqrt d)) for
    the default gamma."""
    d = 5
    Q, K = randn(6, d, seed=19), randn(6, d, seed=20)
    rd = math.sqrt(d)
    expected = (
        torch.exp(Q @ K.T / rd)
        * torch.exp(-(Q * Q).sum(-1, keepdim=True) / (2 * rd))
        * torch.exp(-(K * K).sum(-1) / (2 * rd)).unsqueeze(0)
    )
    assert torch.allclose(gaussian_kernel(Q, K), expected, atol=1e-13, rtol=1e-12)


def test_distances_stable_far_from_origin():
    """Nearby float32 points around 1e4: the distances match a float64 direct
    computation.

    Tolerance: relative error <= 1e-3 per entry (float32 arithmetic on the centred
    points). The naive expansion ||q||^2 + ||k||^2 - 2 q.k in float32 is shown to be
    off by far more (sanity check: the test would catch a regression to it).
    """
    n, d = 8, 16
    Q = (1e4 + 1e-2 * randn(n, d, seed=21)).to(torch.float32)
    K = (1e4 + 1e-2 * randn(n, d, seed=22)).to(torch.float32)
    Q64, K64 = Q.to(F64), K.to(F64)  # the same points, exactly
    exact = ((Q64[:, None, :] - K64[None, :, :]) ** 2).sum(-1)
    assert float(exact.min()) > 0
    got = pairwise_sq_distances(Q, K)
    assert got.dtype == torch.float32
    rel = ((got.to(F64) - exact).abs() / exact).max()
    assert float(rel) <= 1e-3, f"max relative error {float(rel):.2e} > 1e-3"
    naive = (Q * Q).sum(-1, keepdim=True) + (K * K).sum(-1).unsqueeze(0) - 2 * Q @ K.T
    naive_rel = ((naive.to(F64) - exact).abs() / exact).max()
    assert float(naive_rel) > 1.0, "sanity check: the naive expansion should fail here"
    # The kernel values are accurate too (gamma chosen so that exp(-gamma * dist)
    # is O(1)).
    gamma = 1.0 / float(exact.mean())
    S = gaussian_kernel(Q, K, gamma=gamma)
    assert torch.allclose(S.to(F64), torch.exp(-gamma * exact), atol=1e-3, rtol=0)


class _LargestTensor(TorchFunctionMode):
    """Records the largest tensor (in elements) returned by any torch function
    called inside."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for item in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(item, torch.Tensor):
                self.largest = max(self.largest, item.numel())
        return out


def test_largest_tensor_probe_sees_a_broadcast_difference():
    """Sanity check of the probe below: the direct broadcast formula is caught."""
    Q, K = randn(16, 8, seed=23), randn(16, 8, seed=24)
    with _LargestTensor() as probe:
        ((Q[:, None, :] - K[None, :, :]) ** 2).sum(-1)
    assert probe.largest == 16 * 16 * 8


def test_no_n_by_n_by_d_intermediate():
    """n = 2048, d = 64, float32 runs, and no step creates a tensor larger than the
    (n, n) output (an (n, n, d) tensor would have 64 times more entries: 1 GiB).
    Peak memory (max RSS) grows by less than 512 MiB."""
    n, d = 2048, 64
    Q, K = randn(n, d, seed=23, dtype=torch.float32), randn(n, d, seed=24,
                                                            dtype=torch.float32)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    for normalize in (False, True):
        with _LargestTensor() as probe:
            S = gaussian_kernel(Q, K, normalize=normalize)
        assert S.shape == (n, n) and bool(torch.isfinite(S).all())
        assert (
            probe.largest <= n * n
        ), f"a tensor of {probe.largest} entries was created"
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown < 512, f"peak memory grew by {grown:.0f} MiB"


def test_gradients_finite_at_coincident_points():
    Q = randn(5, 3, seed=25).requires_grad_()
    K = Q.detach().clone()
    K[1] = randn(3,
                 seed=26)  # some pairs coincide (the diagonal but row 1), one does not
    weights = randn(5, 5, seed=27)
    for normalize in (False, True):
        (grad, ) = torch.autograd.grad(
            (gaussian_kernel(Q, K, normalize=normalize) * weights).sum(), Q)
        assert bool(torch.isfinite(grad).all())
    # and equal to the gradient of the direct formula
    Qd = Q.detach().clone().requires_grad_()
    direct = torch.exp(-default_gamma(3) *
                       ((Qd[:, None, :] - K[None, :, :])**2).sum(-1))
    (g_direct,) = torch.autograd.grad((direct * weights).sum(), Qd)
    (g_lib,) = torch.autograd.grad((gaussian_kernel(Q, K) * weights).sum(), Q)
    assert torch.allclose(g_lib, g_direct, atol=1e-12, rtol=0)


# torch.func's forward-mode set-up calls torch.jit.script internally (a torch
# DeprecationWarning).
@pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_second_derivatives_exist_and_are_correct():
    """torch.func.hessian through gaussian_kernel is finite and equals that of the
    direct formula, at generic points and where q_k = k_j (tolerance 1e-10)."""
    d = 5
    K = randn(5, d, seed=28, scale=3.0) + 7.0
    weights = randn(5, 5, seed=29)

    def loss_lib(Q):
        return (gaussian_kernel(Q, K) * weights).sum()

    def loss_direct(Q):
        return (torch.exp(-default_gamma(d) * (
            (Q[:, None, :] - K[None, :, :])**2).sum(-1)) * weights).sum()

    generic = randn(5, d, seed=30, scale=3.0) + 7.0
    coincident = K[torch.tensor([3, 0, 4, 1, 2])].clone()  # every q_k equals some k_j
    for Q in (generic, coincident):
        H_lib = torch.func.hessian(loss_lib)(Q)
        H_direct = torch.func.hessian(loss_direct)(Q)
        assert bool(torch.isfinite(H_lib).all())
        assert torch.allclose(H_lib, H_direct, atol=1e-10, rtol=0)


# ------------------------------------------------------------------ names and bad input
def test_second_derivatives_at_coincident_points_batched():
    """Second derivatives (double backward, Hessian-vector products) of a loss
    through the Gaussian kernel equal those of the direct formula where q_k = k_j,
    over many coincident pairs (points away from the origin, where the expansion
    rounds some zero distances to tiny negative values; tolerance 1e-9)."""
    d = 5
    Q0 = randn(16, 6, d, seed=31, scale=3.0) + 7.0
    K = Q0[:, torch.tensor([2, 0, 1, 5, 3, 4])].clone()  # every q_k equals some k_j
    weights, direction = randn(16, 6, 6, seed=32), randn(16, 6, d, seed=33)

    def hvp(kernel):
        Q = Q0.clone().requires_grad_()
        (grad,) = torch.autograd.grad((kernel(Q) * weights).sum(), Q, create_graph=True)
        (second,) = torch.autograd.grad((grad * direction).sum(), Q)
        return grad.detach(), second

    def direct(Q):
        return torch.exp(-default_gamma(d) *
                         ((Q.unsqueeze(-2) - K.unsqueeze(-3))**2).sum(-1))

    g_lib, h_lib = hvp(lambda Q: gaussian_kernel(Q, K))
    g_direct, h_direct = hvp(direct)
    assert torch.allclose(g_lib, g_direct, atol=1e-9, rtol=0)
    assert torch.allclose(h_lib, h_direct, atol=1e-9, rtol=0)


def test_kernel_names_and_lookup():
    assert kernel_names() == ["softmax", "gaussian", "gaussian_normalized"]
    assert get_kernel("softmax") is softmax_kernel
    assert get_kernel("gaussian") is gaussian_kernel
    assert set(KERNELS) == set(kernel_names())


def test_unknown_kernel_name_lists_valid_names():
    with pytest.raises(ValueError, match="kernel") as info:
        get_kernel("foo")
    message = str(info.value)
    assert "'foo'" in message and "softmax" in message and "gaussian" in message


def test_kernel_name_must_be_a_string():
    with pytest.raises(TypeError, match="kernel"):
        get_kernel(softmax_kernel)


@pytest.mark.parametrize("fn", [softmax_kernel, gaussian_kernel, pairwise_sq_distances])
def test_kernels_reject_bad_shapes(fn):
    with pytest.raises(ValueError, match="same shape"):
        fn(randn(3, 2), randn(4, 2))
    with pytest.raises(ValueError, match=r"Q must have shape \(\.\.\., n, d\)"):
        fn(randn(3), randn(3))
    with pytest.raises(TypeError, match="K must be a torch.Tensor"):
        fn(randn(3, 2), [[1.0, 2.0]] * 3)


# ------------------------------------------------------------ overflow and half
# precision
def test_softmax_scales_the_queries_before_the_product():
    from lib.attention import softmax_kernel

    # Q K^T overflows float32 (64 x 1.6e37 > 3.4e38), Q K^T / sqrt(64) does not.
    Q = torch.full((1, 3, 64), 4e18, dtype=torch.float32)
    K = torch.full((1, 3, 64), 4e18, dtype=torch.float32)
    K[0, 1] *= 0.5
    S = softmax_kernel(Q, K)
    assert torch.isfinite(S).all()
    assert torch.allclose(S, softmax_kernel(Q.double(), K.double()).float())


@pytest.mark.parametrize("kernel", ["softmax", "gaussian", "gaussian_normalized"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32(kernel, dtype):
    from lib.attention import attention_matrix

    Q = 40 * randn(2, 5, 8,
                   seed=1)  # scores of order 40^2 * 8 / sqrt(8): beyond float16
    K = 40 * randn(2, 5, 8, seed=2)
    half = attention_matrix(Q.to(dtype), K.to(dtype), kernel)
    reference = attention_matrix(Q.to(dtype).double(), K.to(dtype).double(), kernel)
    assert half.dtype == dtype and torch.isfinite(half).all()
    assert torch.allclose(half.double(), reference, atol=1e-2)
    mask = torch.tensor([[True, True, True, False, True]] * 2)
    masked = attention_matrix(Q.to(dtype), K.to(dtype), kernel, key_mask=mask)
    assert masked.dtype == dtype and torch.isfinite(masked).all()
    assert (masked[..., 3] == 0).all()
