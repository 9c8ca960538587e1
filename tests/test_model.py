"""Tests of lib.model: the attention layer against plain loops, gradients, init, loss,
bad input."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import lib
from lib.attention import default_gamma
from lib.model import INIT_SCHEMES, WEIGHT_NAMES, AttentionLayer, squared_loss
from reference import (
    DEVICE,
    F64,
    randn,
    ref_attention,
    ref_forward,
    ref_heads,
    ref_squared_loss,
    weights_of,
)

KERNELS = ["softmax", "gaussian", "gaussian_normalized"]
# (N, n, D, H, d, d_v, d_out): n = 1, D != d != d_v != d_out, H > 1
SHAPES = [
    (1, 1, 3, 1, 2, 4, 5),
    (2, 1, 4, 2, 3, 2, 1),
    (3, 4, 5, 3, 2, 3, 6),
    (2, 5, 2, 2, 4, 1, 3),
]
TOL = 1e-12  # float64 agreement with the reference loops


def layer(D, **kwargs) -> AttentionLayer:
    kwargs.setdefault("seed", 0)
    kwargs.setdefault("device", DEVICE)
    return AttentionLayer(D, **kwargs)


# ------------------------------------------------------------------ against the
# reference loops
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("shape", SHAPES,
                         ids=lambda s: "N{}n{}D{}H{}d{}dv{}do{}".format(*s))
def test_forward_and_attention_match_reference(kernel, shape):
    N, n, D, H, d, d_v, d_out = shape
    model = layer(D, H=H, d=d, d_v=d_v, d_out=d_out, kernel=kernel, seed=7,
                  qk_scale=1.5)
    X = randn(N, n, D, seed=1)
    W = weights_of(model)
    S = model.attention(X)
    assert S.shape == (N, H, n, n)
    assert torch.allclose(S, ref_attention(X, W, kernel), atol=TOL, rtol=0)
    heads = model.heads(X)
    assert heads.shape == (N, H, n, d_v)
    assert torch.allclose(heads, ref_heads(X, W, kernel), atol=TOL, rtol=0)
    out = model(X)
    assert out.shape == (N, n, d_out)
    assert torch.allclose(out, ref_forward(X, W, kernel), atol=TOL, rtol=0)


@pytest.mark.parametrize("kernel", ["gaussian", "gaussian_normalized"])
def test_forward_matches_reference_with_explicit_gamma(kernel):
    model = layer(4, H=2, d=3, d_v=2, d_out=5, kernel=kernel, gamma=0.9)
    X = randn(2, 3, 4, seed=2)
    W = weights_of(model)
    assert torch.allclose(model.attention(X), ref_attention(X, W, kernel, gamma=0.9),
                          atol=TOL, rtol=0)
    assert torch.allclose(model(X), ref_forward(X, W, kernel, gamma=0.9), atol=TOL,
                          rtol=0)
    # the explicit gamma matters
    assert not torch.allclose(model(X), ref_forward(X, W, kernel,
                                                    gamma=default_gamma(3)), atol=1e-6)


def test_softmax_attention_ignores_gamma():
    a = layer(3, H=2, kernel="softmax", gamma=5.0)
    b = layer(3, H=2, kernel="softmax")
    X = randn(2, 4, 3, seed=3)
    assert torch.equal(a(X), b(X))


def test_forward_is_per_sample():
    """Samples do not interact: the output of a batch is the stack of single-sample
    outputs."""
    model = layer(3, H=2, kernel="gaussian")
    X = randn(3, 4, 3, seed=4)
    single = torch.cat([model(X[i : i + 1]) for i in range(3)])
    assert torch.allclose(model(X), single, atol=1e-14, rtol=0)


# ------------------------------------------------------------------ gradients
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("name", WEIGHT_NAMES)
def test_gradcheck_every_weight(kernel, name):
    """Autograd gradients agree with central finite differences (float64, gradcheck
    defaults: eps 1e-6, atol 1e-5, rtol 1e-3), for one weight matrix at a time."""
    model = layer(3, H=2, d=2, d_v=2, d_out=2, kernel=kernel, seed=3)
    X = randn(2, 3, 3, seed=5)
    original = getattr(model, name).detach().clone()

    def forward_in(weight):
        params = {n: getattr(model, n).detach() for n in WEIGHT_NAMES}
        params[name] = weight
        return torch.func.functional_call(model, params, (X,))

    assert torch.autograd.gradcheck(forward_in, (original.clone().requires_grad_(),))


# ------------------------------------------------------------------ kernels by name
def test_unknown_kernel_in_layer():
    with pytest.raises(ValueError, match="kernel") as info:
        AttentionLayer(3, kernel="foo", device=DEVICE)
    assert "softmax" in str(info.value) and "gaussian" in str(info.value)


def test_set_kernel_switches_and_keeps_weights():
    model = layer(3, H=2, kernel="softmax")
    X = randn(2, 4, 3, seed=6)
    before = {k: v.clone() for k, v in weights_of(model).items()}
    model.set_kernel("gaussian", gamma=0.3)
    assert model.kernel == "gaussian" and model.gamma == 0.3
    assert torch.allclose(model(X), ref_forward(X, before, "gaussian", gamma=0.3),
                          atol=TOL, rtol=0)
    for k, v in weights_of(model).items():
        assert torch.equal(v, before[k])
    model.set_kernel("softmax")
    assert torch.allclose(model(X), ref_forward(X, before, "softmax"), atol=TOL, rtol=0)


def test_set_kernel_rejects_unknown_name_and_keeps_the_old_kernel():
    model = layer(3, kernel="gaussian")
    with pytest.raises(ValueError, match="valid"):
        model.set_kernel("foo")
    assert model.kernel == "gaussian"
    with pytest.raises(ValueError, match="gamma"):
        model.set_kernel("gaussian", gamma=-1.0)


# ------------------------------------------------------------------ parameters and init
def test_parameter_names_and_shapes():
    model = layer(5, H=3, d=2, d_v=4, d_out=6)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert shapes == {
        "W_Q": (3, 5, 2),
        "W_K": (3, 5, 2),
        "W_V": (3, 5, 4),
        "W_O": (12, 6)
    }
    assert list(shapes) == list(WEIGHT_NAMES)


def test_default_dimensions_equal_D():
    model = layer(4, H=2)
    assert (model.d, model.d_v, model.d_out) == (4, 4, 4)
    assert tuple(model.W_O.shape) == (8, 4)
    assert model.W_Q.dtype == torch.float64


@pytest.mark.parametrize("init", list(INIT_SCHEMES))
def test_init_is_seedable(init):
    a, b, c = (layer(6, H=2, d=3, init=init, seed=s) for s in (11, 11, 12))
    for name in WEIGHT_NAMES:
        assert torch.equal(getattr(a, name), getattr(b, name))
        assert not torch.allclose(getattr(a, name), getattr(c, name))


def test_init_without_seed_uses_the_global_generator():
    torch.manual_seed(123)
    a = AttentionLayer(4, H=2, device=DEVICE)
    torch.manual_seed(123)
    b = AttentionLayer(4, H=2, device=DEVICE)
    c = AttentionLayer(4, H=2, device=DEVICE)
    assert torch.equal(a.W_Q, b.W_Q) and torch.equal(a.W_O, b.W_O)
    assert not torch.equal(b.W_Q, c.W_Q)


def test_reset_parameters_redraws():
    model = layer(4, H=2, seed=5)
    first = model.W_V.detach().clone()
    model.reset_parameters(6)
    assert not torch.equal(model.W_V, first)
    model.reset_parameters(5)
    assert torch.equal(model.W_V, first)


def _std(t: torch.Tensor) -> float:
    return float(t.detach().std())


def test_lecun_scales():
    """Entries ~ N(0, 1/fan_in): fan_in = D for W_Q, W_K, W_V, H*d_v for W_O (5%
    tolerance)."""
    D, H, d, d_v, d_out = 256, 2, 64, 128, 200
    model = layer(D, H=H, d=d, d_v=d_v, d_out=d_out, init="lecun", seed=1)
    for name in ("W_Q", "W_K", "W_V"):
        assert _std(getattr(model, name)) == pytest.approx(1 / math.sqrt(D), rel=0.05)
    assert _std(model.W_O) == pytest.approx(1 / math.sqrt(H * d_v), rel=0.05)
    assert abs(float(model.W_Q.detach().mean())) < 0.05 / math.sqrt(D)


def test_xavier_scales():
    """Entries ~ N(0, 2/(fan_in + fan_out)), per head for W_Q, W_K, W_V (5%
    tolerance)."""
    D, H, d, d_v, d_out = 256, 2, 64, 128, 200
    model = layer(D, H=H, d=d, d_v=d_v, d_out=d_out, init="xavier", seed=1)
    assert _std(model.W_Q) == pytest.approx(math.sqrt(2 / (D + d)), rel=0.05)
    assert _std(model.W_K) == pytest.approx(math.sqrt(2 / (D + d)), rel=0.05)
    assert _std(model.W_V) == pytest.approx(math.sqrt(2 / (D + d_v)), rel=0.05)
    assert _std(model.W_O) == pytest.approx(math.sqrt(2 / (H * d_v + d_out)), rel=0.05)


@pytest.mark.parametrize("D,d,d_v,d_out", [(6, 3, 8, 4), (4, 7, 2, 5)])
def test_orthogonal_singular_values_are_one(D, d, d_v, d_out):
    H = 3
    model = layer(D, H=H, d=d, d_v=d_v, d_out=d_out, init="orthogonal", seed=2)
    blocks = [model.W_Q[h] for h in range(H)] + [model.W_K[h] for h in range(H)
                                                 ] + [model.W_V[h] for h in range(H)]
    blocks += list(model.W_O.detach().reshape(H, d_v, d_out).unbind(0))
    for M in blocks:
        sv = torch.linalg.svdvals(M.detach())
        assert torch.allclose(sv, torch.ones_like(sv), atol=1e-12, rtol=0)
    # heads differ
    assert not torch.allclose(model.W_Q[0], model.W_Q[1])


@pytest.mark.parametrize("init", list(INIT_SCHEMES))
@pytest.mark.parametrize("qk_scale", [2.5, -0.5, 0.0])
def test_qk_scale_multiplies_queries_and_keys(init, qk_scale):
    base = layer(4, H=2, d=3, init=init, seed=9)
    scaled = layer(4, H=2, d=3, init=init, seed=9, qk_scale=qk_scale)
    assert torch.allclose(scaled.W_Q, qk_scale * base.W_Q, atol=1e-15, rtol=0)
    assert torch.allclose(scaled.W_K, qk_scale * base.W_K, atol=1e-15, rtol=0)
    assert torch.equal(scaled.W_V, base.W_V) and torch.equal(scaled.W_O, base.W_O)


@pytest.mark.parametrize("qk_scale", [float("nan"), float("inf")])
def test_qk_scale_must_be_finite(qk_scale):
    with pytest.raises(ValueError, match="qk_scale"):
        layer(3, qk_scale=qk_scale)


def test_unknown_init():
    with pytest.raises(ValueError, match="init") as info:
        layer(3, init="he")
    assert "lecun" in str(info.value) and "orthogonal" in str(info.value)


def test_dtype_and_device_arguments():
    model = layer(3, H=2, dtype=torch.float32, device="cpu")
    for p in model.parameters():
        assert p.dtype == torch.float32 and p.device.type == "cpu"
    X = randn(2, 3, 3, dtype=torch.float32)
    assert model(X).dtype == torch.float32
    with pytest.raises(TypeError, match="dtype"):
        layer(3, dtype=torch.int64)


def test_default_device_is_get_device():
    model = AttentionLayer(3, seed=0)
    assert model.W_Q.device.type == lib.get_device().type


# ------------------------------------------------------------------ squared loss
def test_squared_loss_by_hand():
    P, Y = randn(3, 4, 2, seed=1), randn(3, 4, 2, seed=2)
    assert float(squared_loss(P, Y)) == pytest.approx(ref_squared_loss(P, Y), rel=1e-13)
    # one sample, one entry: 1/(2N) * 3^2
    P1 = torch.zeros(1, 1, 1, dtype=F64)
    assert float(squared_loss(P1, P1 + 3.0)) == pytest.approx(4.5, rel=1e-15)
    assert float(squared_loss(P, P)) == 0.0


def test_squared_loss_shape_mismatch():
    with pytest.raises(ValueError,
                       match=r"Y must have the prediction's shape \(3, 4, 2\)"):
        squared_loss(randn(3, 4, 2), randn(3, 4, 3))
    with pytest.raises(ValueError, match="Y must have 3 dimensions"):
        squared_loss(randn(3, 4, 2), randn(3, 8))


def test_squared_loss_rejects_non_finite_targets():
    Y = randn(2, 3, 2)
    Y[1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="Y must contain only finite values"):
        squared_loss(randn(2, 3, 2), Y)


# ------------------------------------------------------------------ bad input
def test_X_wrong_rank():
    model = layer(3)
    with pytest.raises(ValueError, match="X must have 3 dimensions"):
        model(randn(4, 3))
    with pytest.raises(ValueError, match="X must have 3 dimensions"):
        model.attention(randn(1, 2, 4, 3))


def test_X_wrong_embedding_dimension():
    model = layer(3)
    with pytest.raises(ValueError, match=r"X must have shape \(\*, \*, 3\)"):
        model(randn(2, 4, 5))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_X_non_finite(bad):
    X = randn(2, 3, 3)
    X[0, 1, 2] = bad
    with pytest.raises(ValueError, match="X must contain only finite values"):
        layer(3)(X)


def test_X_not_a_float_tensor():
    with pytest.raises(TypeError, match="X must be a torch.Tensor"):
        layer(3)([[[1.0, 2.0, 3.0]]])
    with pytest.raises(TypeError, match="X must be a floating-point tensor"):
        layer(3)(torch.ones(1, 2, 3, dtype=torch.int64))


def test_X_dtype_differs_from_weights():
    with pytest.raises(TypeError, match="X has dtype torch.float32"):
        layer(3)(randn(2, 3, 3, dtype=torch.float32))


@pytest.mark.parametrize(
    "name,shape",
    [("W_Q", (2, 3, 3)), ("W_Q", (1, 3, 3)), ("W_K", (2, 3)), ("W_V", (2, 3, 4)),
     ("W_O", (5, 2))],
)
def test_weight_of_wrong_shape_is_reported_at_forward(name, shape):
    model = layer(3, H=2, d=2)
    setattr(model, name, nn.Parameter(torch.zeros(shape, dtype=F64)))
    with pytest.raises(ValueError, match=f"{name} must have shape"):
        model(randn(2, 4, 3))
    with pytest.raises(ValueError, match=f"{name} must have shape"):
        model.attention(randn(2, 4, 3))


@pytest.mark.parametrize("arg", ["D", "H", "d", "d_v", "d_out"])
@pytest.mark.parametrize("value,error", [(0, ValueError), (-1, ValueError),
                                         (2.5, TypeError), (True, TypeError)])
def test_sizes_must_be_positive_integers(arg, value, error):
    kwargs = {"D": 3, arg: value}
    with pytest.raises(error, match=f"{arg} must be a positive integer"):
        AttentionLayer(**kwargs, device=DEVICE)


def test_extra_repr_names_the_configuration():
    text = repr(layer(3, H=2, kernel="gaussian"))
    assert "H=2" in text and "kernel='gaussian'" in text


def test_copy_keeps_settings_and_weights_and_can_switch_the_kernel():
    layer = AttentionLayer(4, H=2, d=3, d_out=2, kernel="gaussian", gamma=0.3,
                           init="orthogonal", qk_scale=0.5, seed=3, device="cpu")
    twin = layer.copy()
    assert twin is not layer and repr(twin) == repr(layer) and twin.gamma == 0.3
    for name in ("W_Q", "W_K", "W_V", "W_O"):
        assert torch.equal(getattr(twin, name), getattr(layer, name))
        assert getattr(twin, name).data_ptr() != getattr(layer, name).data_ptr()
    other = layer.copy(kernel="softmax")
    assert other.kernel == "softmax" and layer.kernel == "gaussian"
    assert torch.equal(other.W_Q, layer.W_Q)


@pytest.mark.parametrize("seed", [1.5, "0", 2**64, -1, True])
def test_bad_seeds_are_named(seed):
    with pytest.raises(ValueError,
                       match="seed must be a non-negative integer below 2\\*\\*32"):
        AttentionLayer(3, seed=seed, device="cpu")


def test_qk_scale_must_be_a_number():
    with pytest.raises(TypeError, match="qk_scale must be a number, got '1'"):
        AttentionLayer(3, qk_scale="1", device="cpu")


def test_integer_dtype_is_rejected():
    with pytest.raises(TypeError, match="dtype must be a floating-point torch.dtype"):
        AttentionLayer(3, dtype=torch.int64, device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_is_named():
    with pytest.raises(ValueError,
                       match="device 'cuda' was requested but CUDA is not available"):
        AttentionLayer(3, device="cuda")
    with pytest.raises(ValueError, match="device 'gpu' is not a device torch knows"):
        AttentionLayer(3, device="gpu")
