"""lib.fused_attention against the plain reference (lib.attention.attention_matrix),
float64."""

import pytest
import torch

from lib.attention import attention_matrix, kernel_names
from lib.classifier import TransformerClassifier
from lib.fused_attention import fused_attention

TOL = 1e-12


def _inputs(seed, B=3, H=2, n=7, d=5, dv=5, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    Q, K, V = (
        scale * torch.randn(B, H, n, m, generator=gen, dtype=torch.float64)
        for m in (d, d, dv)
    )
    return Q.requires_grad_(), K.requires_grad_(), V.requires_grad_()


def _masks(B=3, n=7):
    mask = torch.ones(B, 1, n, dtype=torch.bool)
    mask[0, 0, 4:] = False  # padding at the end
    mask[1, 0, [1, 5]] = False  # holes
    partial = mask.clone()
    empty = mask.clone()
    empty[2] = False  # a sequence without any real token
    return {"none": None, "padding": partial, "empty row": empty}


@pytest.mark.parametrize("kernel", kernel_names())
@pytest.mark.parametrize("mask_name", ["none", "padding", "empty row"])
@pytest.mark.parametrize("dv", [3, 5, 9])
def test_matches_reference_values_and_gradients(kernel, mask_name, dv):
    Q, K, V = _inputs(0, dv=dv)
    mask = _masks()[mask_name]
    ref = attention_matrix(Q, K, kernel, key_mask=mask) @ V
    out = fused_attention(Q, K, V, kernel, key_mask=mask)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, rtol=0, atol=TOL)
    w = torch.randn(
        ref.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    g_ref = torch.autograd.grad((ref * w).sum(), (Q, K, V))
    g_out = torch.autograd.grad((out * w).sum(), (Q, K, V))
    for a, b in zip(g_ref, g_out):
        assert torch.allclose(a, b, rtol=0, atol=TOL)


@pytest.mark.parametrize("gamma", [0.05, 1.0])
def test_gaussian_bandwidth_and_far_points(gamma):
    # Large, offset queries and keys: entries of S span many orders of magnitude.
    Q, K, V = _inputs(2, scale=3.0)
    with torch.no_grad():
        Q += 10.0
        K += 10.0
    mask = _masks()["padding"]
    ref = attention_matrix(Q, K, "gaussian", gamma=gamma, key_mask=mask) @ V
    out = fused_attention(Q, K, V, "gaussian", gamma=gamma, key_mask=mask)
    assert torch.allclose(out, ref, rtol=1e-10, atol=1e-12)


def test_padding_keys_have_no_effect():
    Q, K, V = _inputs(3)
    mask = _masks()["padding"]
    out = fused_attention(Q, K, V, "gaussian", key_mask=mask)
    K2, V2 = K.detach().clone(), V.detach().clone()
    K2[0, :, 4:] = 1e3
    V2[0, :, 4:] = -7.0
    out2 = fused_attention(Q, K2, V2, "gaussian", key_mask=mask)
    assert torch.allclose(out, out2, atol=TOL)


@pytest.mark.parametrize("kernel", ["softmax", "gaussian"])
def test_classifier_fused_equals_plain(kernel):
    x = torch.randint(2, 50, (4, 12), generator=torch.Generator().manual_seed(0))
    x[0, 7:] = 0  # padding
    y = torch.tensor([0, 1, 1, 0])
    grads, logits = [], []
    for fused in (True, False):
        model = TransformerClassifier(
            vocab_size=50, max_len=12, D=8, H=2, mlp_dim=16, kernel=kernel, seed=0
        ).double()
        model.fused = fused
        out = model(x)
        torch.nn.functional.cross_entropy(out, y).backward()
        logits.append(out.detach())
        grads.append([p.grad for p in model.parameters()])
    assert torch.allclose(logits[0], logits[1], atol=TOL)
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=TOL)


def test_bad_inputs():
    Q, K, V = _inputs(0)
    with pytest.raises(ValueError, match="kernel"):
        fused_attention(Q, K, V, "laplace")
    with pytest.raises(ValueError, match="V must have shape"):
        fused_attention(Q, K, V[:, :, :3], "softmax")
    with pytest.raises(TypeError, match="key_mask"):
        fused_attention(Q, K, V, "softmax", key_mask=torch.ones(3, 1, 7))
    with pytest.raises(ValueError, match="key_mask"):
        fused_attention(
            Q, K, V, "softmax", key_mask=torch.ones(3, 1, 6, dtype=torch.bool)
        )
    with pytest.raises(ValueError, match="gamma"):
        fused_attention(Q, K, V, "gaussian", gamma=-1.0)


def test_hessian_vector_products_fall_back_to_the_plain_kernels():
    # torch.func transforms (forward-over-reverse) cannot go through the fused CPU
    # kernel.
    from lib.hessian import hvp

    x = torch.randint(2, 30, (3, 6), generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 1])
    # float32: the dtype for which PyTorch picks its fused CPU kernel
    model = TransformerClassifier(
        vocab_size=30, max_len=6, D=8, H=2, mlp_dim=8, kernel="gaussian", seed=0
    )
    names = ["blocks.0.attn.W_Q.weight"]
    v = torch.randn(64, generator=torch.Generator().manual_seed(1))
    Hv = hvp(model, x, y, names, v, loss_fn=torch.nn.functional.cross_entropy)
    model.fused = False
    ref = hvp(model, x, y, names, v, loss_fn=torch.nn.functional.cross_entropy)
    assert torch.isfinite(Hv).all() and torch.allclose(Hv, ref, rtol=1e-4, atol=1e-6)


def test_cpu_route_without_sink_is_taken_and_exact():
    # d = d_v, float64 on the CPU: the log-sum-exp route (no sink key) is used.
    Q, K, V = _inputs(4, d=6, dv=6)
    mask = _masks()["empty row"]
    out = fused_attention(Q, K, V, "gaussian", gamma=0.3, key_mask=mask)
    nodes, names = [out.grad_fn], set()
    for _ in range(4):  # the autograd nodes within four steps of the output
        names |= {type(f).__name__ for f in nodes}
        nodes = [g for f in nodes for g, _ in f.next_functions if g is not None]
    assert any("GaussianCPU" in name for name in names), names
    ref = attention_matrix(Q, K, "gaussian", gamma=0.3, key_mask=mask) @ V
    assert torch.allclose(out, ref, rtol=0, atol=TOL)
    assert (out[2] == 0).all()  # the sequence without a real key
    assert torch.autograd.gradcheck(
        lambda q, k, v: fused_attention(q, k, v, "gaussian", gamma=0.3,
                                        key_mask=mask[:2, :, :4]),
        (Q[:2, :1, :4], K[:2, :1, :4], V[:2, :1, :4]), atol=1e-8)
