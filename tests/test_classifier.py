"""Tests of lib.classifier (the Transformer classifier) and
lib.attention.attention_matrix (masking)."""
import math

import pytest
import torch

from lib.attention import attention_matrix, default_gamma, get_kernel, kernel_names
from lib.classifier import TransformerClassifier

KERNELS = ["softmax", "gaussian", "gaussian_normalized"]


def tokens(B=3, L=6, V=11, seed=0, low=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, V, (B, L), generator=g)


def small(**kw):
    args = dict(vocab_size=11, max_len=12, D=8, H=2, mlp_dim=16, seed=0)
    args.update(kw)
    return TransformerClassifier(**args)


# ------------------------------------------------------------------ attention_matrix
@pytest.mark.parametrize("kernel", KERNELS)
def test_attention_matrix_without_mask_is_the_kernel(kernel):
    g = torch.Generator().manual_seed(1)
    Q, K = torch.randn(2, 3, 5, 4, generator=g,
                       dtype=torch.float64), torch.randn(2, 3, 5, 4, generator=g,
                                                         dtype=torch.float64)
    fn = get_kernel(kernel)
    expected = fn(Q, K) if kernel == "softmax" else fn(Q, K, gamma=0.3)
    assert torch.equal(attention_matrix(Q, K, kernel, gamma=0.3), expected)
    # An all-True mask changes nothing (up to rounding of the re-centred distances).
    full = torch.ones(2, 1, 5, dtype=torch.bool)
    assert torch.allclose(attention_matrix(Q, K, kernel, gamma=0.3, key_mask=full),
                          expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("kernel", KERNELS)
def test_attention_matrix_masks_keys(kernel):
    g = torch.Generator().manual_seed(2)
    Q, K = torch.randn(2, 6, 4, generator=g,
                       dtype=torch.float64), torch.randn(2, 6, 4, generator=g,
                                                         dtype=torch.float64)
    mask = torch.tensor([[True, True, True, False, False, False], [True] * 5 + [False]])
    S = attention_matrix(Q, K, kernel, key_mask=mask)
    assert torch.all(S[0, :, 3:] == 0) and torch.all(S[1, :, 5] == 0)
    for b, n in ((0, 3), (1, 5)):
        # Real keys: as if the padding were not there at all.
        q, k = Q[b], K[b, :n]
        if kernel == "softmax":
            expected = torch.softmax(q @ k.T / 2.0, dim=-1)
        else:
            dist = ((q[:, None, :] - k[None, :, :]) ** 2).sum(-1)
            expected = torch.exp(-default_gamma(4) * dist)
            if kernel == "gaussian_normalized":
                expected = expected / expected.sum(-1, keepdim=True)
        assert torch.allclose(S[b, :, :n], expected, atol=1e-12, rtol=0)
    if kernel != "gaussian":
        assert torch.allclose(S.sum(-1), torch.ones(2, 6, dtype=torch.float64),
                              atol=1e-12)


@pytest.mark.parametrize("kernel", KERNELS)
def test_attention_matrix_all_masked_row_is_zero_not_nan(kernel):
    Q = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    K = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[False] * 4, [True, False, True, False]])
    S = attention_matrix(Q, K, kernel, key_mask=mask)
    assert torch.isfinite(S).all() and torch.all(S[0] == 0)
    S.sum().backward()
    assert torch.isfinite(Q.grad).all() and torch.isfinite(K.grad).all()


def test_attention_matrix_bad_inputs():
    Q = torch.randn(2, 4, 3)
    with pytest.raises(ValueError,
                       match="unknown kernel 'cosine'; valid: 'softmax', 'gaussian'"):
        attention_matrix(Q, Q, "cosine")
    with pytest.raises(TypeError, match="key_mask must be a bool tensor"):
        attention_matrix(Q, Q, "softmax", key_mask=torch.ones(2, 4))
    with pytest.raises(ValueError,
                       match=r"key_mask must have shape \(\.\.\., n\) with n = 4"):
        attention_matrix(Q, Q, "softmax", key_mask=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="do not broadcast"):
        attention_matrix(Q, Q, "gaussian", key_mask=torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="gamma must be a finite number > 0"):
        attention_matrix(Q, Q, "gaussian", gamma=-1.0,
                         key_mask=torch.ones(2, 4, dtype=torch.bool))


# ------------------------------------------------------------------ shapes
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_token_model_shapes(kernel, pooling):
    model = small(kernel=kernel, pooling=pooling, num_classes=3)
    x = tokens(B=4, L=7)
    logits = model(x)
    assert logits.shape == (
        4, 3) and logits.dtype == torch.float32 and torch.isfinite(logits).all()
    maps = model.attention_maps(x)
    extra = 1 if pooling == "cls" else 0
    assert len(maps) == 2 and all(S.shape == (4, 2, 7 + extra, 7 + extra) for S in maps)
    assert not any(S.requires_grad for S in maps)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_pixel_model_shapes(pooling):
    model = TransformerClassifier(max_len=16, D=8, H=2, mlp_dim=16, pooling=pooling,
                                  kernel="gaussian", seed=0)
    images = torch.rand(5, 4, 4)
    flat = images.reshape(5, -1)
    logits = model(flat)
    assert logits.shape == (5, 2)
    assert torch.equal(logits, model(flat.unsqueeze(-1)))
    assert torch.allclose(logits, model(flat.double()),
                          atol=1e-6)  # float inputs are cast
    rgb = TransformerClassifier(input_dim=3, max_len=16, D=8, H=2, mlp_dim=16, seed=0)
    assert rgb(torch.rand(2, 10, 3)).shape == (2, 2)
    assert model.pad_id is None


def test_paper_size_defaults():
    model = TransformerClassifier(vocab_size=100, max_len=32)
    assert (model.D, model.H, model.head_dim, model.mlp_dim,
            model.num_layers) == (64, 2, 32, 128, 2)
    assert model.kernel == "softmax" and model.pooling == "mean" and model.pad_id == 0
    assert len(model.blocks) == 2 and model.blocks[0].attn.W_Q.weight.shape == (64, 64)
    assert model.blocks[0].mlp[0].weight.shape == (128, 64)
    assert model.num_parameters() == sum(p.numel() for p in model.parameters())
    assert "kernel='softmax'" in repr(model)


# ------------------------------------------------------------------ padding
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("pooling", ["mean", "cls"])
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_padding_does_not_change_logits(kernel, pooling, dtype, tol):
    model = small(kernel=kernel, pooling=pooling).to(dtype)
    x = tokens(B=3, L=5)
    padded = torch.cat([x, torch.zeros(3, 6, dtype=torch.long)], dim=1)
    # Also padding inside the batch: sequence 1 is shorter, compared with itself
    # unpadded.
    err = (model(x) - model(padded)).abs().max().item()
    assert err < tol, f"max |logit difference| = {err:.1e} (tolerance {tol:g})"
    short = model(x[1:2, :3])
    ragged = x.clone()
    ragged[1, 3:] = 0
    err = (model(ragged)[1] - short[0]).abs().max().item()
    assert err < tol


def test_pad_tokens_get_no_attention():
    model = small(kernel="softmax")
    x = tokens(B=2, L=8)
    x[0, 5:] = 0
    x[1, 2:] = 0
    for S in model.attention_maps(x):
        assert torch.all(S[0, :, :, 5:] == 0) and torch.all(S[1, :, :, 2:] == 0)
        assert torch.allclose(S.sum(-1), torch.ones(2, 2, 8), atol=1e-6)
    model.set_kernel("gaussian")
    for S in model.attention_maps(x):
        assert torch.all(S[0, :, :, 5:] == 0) and torch.all(S[1, :, :, 2:] == 0)
        assert torch.all(S[0, :, :, :5] > 0)


def test_explicit_mask_and_pad_id_none():
    model = small(pad_id=None)
    x = tokens(B=2, L=6)
    x[:, 4:] = 0
    assert not torch.allclose(model(x), model(
        x[:, :4]))  # no masking: token 0 is a real token
    mask = x != 0
    assert torch.allclose(model(x, mask), model(x[:, :4]), atol=1e-5)


def test_all_padding_sequence_is_finite():
    model = small()
    x = tokens(B=2, L=5)
    x[0] = 0
    logits = model(x)
    assert torch.isfinite(logits).all()
    assert torch.allclose(logits[0], model.head.bias,
                          atol=1e-6)  # pools to the zero vector
    logits.sum().backward()
    assert all(
        torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# ------------------------------------------------------------------ kernel switching
def test_set_kernel_switches_every_layer_and_keeps_weights():
    model = small(num_layers=3)
    x = tokens()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out_softmax = model(x)
    model.set_kernel("gaussian", gamma=0.2)
    assert model.kernel == "gaussian" and model.gamma == 0.2
    assert all(b.attn.kernel == "gaussian" and b.attn.gamma == 0.2
               for b in model.blocks)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    out_gauss = model(x)
    assert (out_gauss - out_softmax).abs().max() > 1e-4
    model.set_kernel("softmax")
    assert torch.equal(model(x), out_softmax)
    with pytest.raises(
            ValueError, match=
            "unknown kernel 'rbf'; valid: 'softmax', 'gaussian', 'gaussian_normalized'"
    ):
        model.set_kernel("rbf")
    assert model.kernel == "softmax"


def test_default_gamma_is_for_the_head_dimension():
    model = small(kernel="gaussian", D=12, H=3)
    x = tokens(L=4)
    explicit = small(kernel="gaussian", D=12, H=3, gamma=default_gamma(4))
    assert model.gamma is None
    assert torch.equal(model(x), explicit(x))
    assert math.isclose(default_gamma(model.head_dim), 1 / (2 * math.sqrt(4)))


# ------------------------------------------------------------------ init, gradients
def test_seed_fixes_the_initialisation_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b = small(seed=3), small(seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    c = small(seed=4)
    assert not torch.equal(a.pos, c.pos)
    assert torch.all(a.embed.weight[0] == 0)  # padding row


def test_gradients_reach_every_parameter():
    model = small(pooling="cls")
    x = tokens()
    x[0, 3:] = 0
    torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 1])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda():
    model = small(kernel="gaussian").to("cuda")
    x = tokens().to("cuda")
    assert model(x).device.type == "cuda"
    assert torch.allclose(model(x).cpu(), small(kernel="gaussian")(x.cpu()), atol=1e-5)


# ------------------------------------------------------------------ bad input
def test_constructor_errors():
    with pytest.raises(
        ValueError,
        match=(
            "D \\(embedding dimension, 10\\) must be divisible by H \\(number of heads,"
            " 3\\)"
        ),
    ):
        TransformerClassifier(vocab_size=10, max_len=4, D=10, H=3)
    with pytest.raises(ValueError,
                       match="unknown kernel 'laplace'; valid: 'softmax', 'gaussian'"):
        TransformerClassifier(vocab_size=10, max_len=4, kernel="laplace")
    with pytest.raises(ValueError, match="unknown pooling 'max'; valid: 'mean', 'cls'"):
        TransformerClassifier(vocab_size=10, max_len=4, pooling="max")
    for name in ("vocab_size", "max_len", "D", "H", "mlp_dim", "num_layers",
                 "input_dim", "num_classes"):
        kw = dict(vocab_size=10, max_len=4)
        kw[name] = 0
        with pytest.raises(ValueError, match=f"{name} must be a positive integer"):
            TransformerClassifier(**kw)
    with pytest.raises(TypeError, match="max_len must be a positive integer"):
        TransformerClassifier(vocab_size=10, max_len=4.0)
    with pytest.raises(ValueError, match="num_classes must be at least 2"):
        TransformerClassifier(vocab_size=10, max_len=4, num_classes=1)
    with pytest.raises(ValueError, match="dropout must be a number in \\[0, 1\\)"):
        TransformerClassifier(vocab_size=10, max_len=4, dropout=1.0)
    with pytest.raises(ValueError,
                       match="pad_id must be an integer in \\[0, vocab_size=10\\)"):
        TransformerClassifier(vocab_size=10, max_len=4, pad_id=10)
    with pytest.raises(ValueError, match="gamma must be a finite number > 0"):
        TransformerClassifier(vocab_size=10, max_len=4, kernel="gaussian", gamma=0.0)
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        TransformerClassifier(vocab_size=10, max_len=4, seed=-1)


def test_forward_errors():
    model = small()
    pixels = TransformerClassifier(max_len=12, D=8, H=2, mlp_dim=16)
    with pytest.raises(TypeError,
                       match="x must hold integer token ids .* vocab_size=None"):
        model(torch.rand(2, 5))
    with pytest.raises(
            TypeError,
            match="x must be a floating-point tensor .* x.float\\(\\) / 255"):
        pixels(torch.randint(0, 255, (2, 5)))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        model([[1, 2, 3]])
    with pytest.raises(ValueError, match="x must have shape \\(B, L\\) of token ids"):
        model(tokens().unsqueeze(-1))
    with pytest.raises(ValueError,
                       match="x must have shape \\(B, L\\) or \\(B, L, 1\\)"):
        pixels(torch.rand(5))
    with pytest.raises(ValueError, match="x must have shape \\(B, L, 3\\)"):
        TransformerClassifier(input_dim=3, max_len=12, D=8, H=2)(torch.rand(2, 5, 2))
    with pytest.raises(ValueError, match="sequence length 13 exceeds max_len=12"):
        model(tokens(L=13))
    with pytest.raises(
            ValueError,
            match="token ids must lie in \\[0, vocab_size=11\\), found ids from 1 to 11"
    ):
        model(tokens(V=12) * 0 + torch.tensor([1, 11, 3, 4, 5, 6]))
    with pytest.raises(ValueError, match="found ids from -1"):
        model(torch.tensor([[-1, 2]]))
    bad = torch.rand(2, 5)
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError,
                       match="x must contain only finite values, found 1 NaN/inf"):
        pixels(bad)
    with pytest.raises(ValueError, match="at least one sequence and one position"):
        model(torch.zeros(0, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="mask must have shape \\(B, L\\)"):
        model(tokens(), torch.ones(3, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        model(tokens(), torch.ones(3, 6))
    assert set(kernel_names()) == set(KERNELS)
