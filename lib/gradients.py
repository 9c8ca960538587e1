"""Gradients of the training loss and their finite-difference check.

* ``loss_gradients``: {name: gradient of loss_fn(model(X), Y) in that weight} by
autograd.
* ``directional_check``: compares the gradient with central finite differences of the
loss along
  seeded random unit directions, the check that a hand-derived or autograd gradient is
  right.
* ``value_output_gradients`` / ``query_gradient``: the hand-derived gradients of the
squared loss
  of a ``lib.model.AttentionLayer`` in W_V, W_O and W_Q (the chapter "One layer,
  gradient descent" derives them), with the attention matrices S, the concatenated
  heads C and the residuals R of ``residual_parts``.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import math

import torch
from torch import nn

from .attention import default_gamma
from .model import WEIGHT_NAMES, AttentionLayer, functional_loss, squared_loss
from .validation import (
    check_names,
    check_positive_float,
    check_positive_int,
    check_seed,
)

__all__ = [
    "loss_gradients",
    "loss_and_gradients",
    "directional_check",
    "residual_parts",
    "value_output_gradients",
    "query_gradient",
]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def loss_gradients(
    model: nn.Module,
    X: torch.Tensor,
    Y: torch.Tensor,
    names: Sequence[str] | str = WEIGHT_NAMES,
    loss_fn: LossFn = squared_loss,
) -> dict[str, torch.Tensor]:
    """{name: d loss_fn(model(X), Y) / d name} for the named weights (shaped like
    each weight)."""
    return loss_and_gradients(model, X, Y, names, loss_fn=loss_fn)[1]


def loss_and_gradients(
    model: nn.Module,
    X: torch.Tensor,
    Y: torch.Tensor,
    names: Sequence[str] | str = WEIGHT_NAMES,
    *,
    at: Mapping[str, torch.Tensor] | None = None,
    loss_fn: LossFn = squared_loss,
) -> tuple[float, dict[str, torch.Tensor]]:
    """(f, {name: gradient of f in that weight}) with f = loss_fn(model(X), Y).

    ``at``: values for some of the weights (e.g. {"W_V": W_V}) at which to evaluate
    instead of the model's own; the model is not modified
    (``torch.func.functional_call``).
    """
    names = check_names(model, names)
    params = {k: v.detach() for k, v in model.named_parameters()}
    if at is not None:
        check_names(model, tuple(at), "at")
        params.update({k: v.detach() for k, v in at.items()})
    leaves = {name: params[name].clone().requires_grad_(True) for name in names}
    with torch.enable_grad():
        loss = functional_loss(model, X, Y, loss_fn)({**params, **leaves})
        grads = torch.autograd.grad(loss, list(leaves.values()))
    return float(loss.detach()), dict(zip(names, grads))


@torch.no_grad()
def directional_check(
    model: nn.Module,
    X: torch.Tensor,
    Y: torch.Tensor,
    name: str,
    *,
    grad: torch.Tensor | None = None,
    n_dirs: int = 3,
    eps: float = 1e-6,
    seed: int = 0,
    loss_fn: LossFn = squared_loss,
) -> float:
    """Largest |central difference - <grad, U>| / ||grad|| over ``n_dirs`` random
    unit directions U.

    The central difference (f(W + eps U) - f(W - eps U)) / (2 eps) approximates the
    directional derivative <grad_W f, U> to O(eps^2). ``grad``: the gradient to
    check (default: autograd's); the weight is restored exactly afterwards.
    """
    (name,) = check_names(model, (name,))
    n_dirs = check_positive_int(n_dirs, "n_dirs")
    eps = check_positive_float(eps, "eps")
    gen = torch.Generator().manual_seed(check_seed(seed))
    param = dict(model.named_parameters())[name]
    if grad is None:
        grad = loss_gradients(model, X, Y, (name,), loss_fn)[name]
    if not isinstance(grad, torch.Tensor) or grad.shape != param.shape:
        raise ValueError(
            f"grad must be a tensor of {name}'s shape {tuple(param.shape)}")
    saved = param.detach().clone()
    worst = 0.0
    try:
        for _ in range(n_dirs):
            U = torch.randn(param.shape, generator=gen, dtype=torch.float64).to(param)
            U /= torch.linalg.vector_norm(U)
            param.copy_(saved + eps * U)
            f_plus = float(loss_fn(model(X), Y))
            param.copy_(saved - eps * U)
            f_minus = float(loss_fn(model(X), Y))
            fd = (f_plus - f_minus) / (2 * eps)
            error = abs(fd - float((grad * U).sum())) / float(
                torch.linalg.vector_norm(grad))
            worst = max(worst, error)
    finally:
        param.copy_(saved)
    return worst


@torch.no_grad()
def residual_parts(
    model: AttentionLayer, X: torch.Tensor, Y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """S: (N, H, n, n), C = Concat(heads): (N, n, H*d_v), residuals R = C W_O - Y:
    (N, n, d_out)."""
    if not isinstance(model, AttentionLayer):
        raise TypeError(
            f"model must be a lib.model.AttentionLayer, got {type(model).__name__}")
    S, heads = model.attention(X), model.heads(X)
    C = heads.permute(0, 2, 1, 3).flatten(2)
    return S, C, C @ model.W_O - Y


@torch.no_grad()
def value_output_gradients(
    model: AttentionLayer, X: torch.Tensor, Y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of f in W_V (H, D, d_v) and W_O (H*d_v, d_out):

    grad_{W_V^h} f = 1/N sum_i (S_i^h X_i)^T R_i (W_O^h)^T,  grad_{W_O} f = 1/N
    sum_i C_i^T R_i.
    """
    S, C, R = residual_parts(model, X, Y)
    W_O_blocks = model.W_O.reshape(model.H, model.d_v, model.d_out)  # W_O^h
    SX = S @ X.unsqueeze(1)  # S_i^h X_i: (N, H, n, D)
    grad_V = torch.einsum("ihna,ino,hbo->hab", SX, R, W_O_blocks) / X.shape[0]
    grad_O = torch.einsum("inc,ino->co", C, R) / X.shape[0]
    return grad_V, grad_O


@torch.no_grad()
def query_gradient(model: AttentionLayer, X: torch.Tensor,
                   Y: torch.Tensor) -> torch.Tensor:
    """Gradient of f in W_Q: (H, D, d). With V_i^h = X_i W_V^h W_O^h and G_i^h = R_i
    (V_i^h)^T / N (d f / d S_i^h), the row k of d f / d Q is (diag(p_k) - p_k p_k^T)
    g_k K / sqrt(d) for Softmax (p_k, g_k: rows k of S and G) and -2 gamma (sum_j
    M_kj q_k - sum_j M_kj k_j) for the Gaussian kernel, M = G * S; then grad_{W_Q^h}
    f = sum_i X_i^T d f / d Q_i^h."""
    if model.kernel not in ("softmax", "gaussian"):
        raise ValueError(
            "query_gradient covers the kernels 'softmax' and 'gaussian', got"
            f" {model.kernel!r}"
        )
    S, C, R = residual_parts(model, X, Y)
    W_O_blocks = model.W_O.reshape(model.H, model.d_v, model.d_out)
    V = torch.einsum("inD,hDv,hvo->ihno", X, model.W_V, W_O_blocks)
    G = torch.einsum("iko,ihjo->ihkj", R, V) / X.shape[0]
    Q = torch.einsum("inD,hDd->ihnd", X, model.W_Q)
    K = torch.einsum("inD,hDd->ihnd", X, model.W_K)
    if model.kernel == "softmax":
        dZ = S * (G - (S * G).sum(-1, keepdim=True))
        dQ = dZ @ K / math.sqrt(model.d)
    else:
        gamma = default_gamma(model.d) if model.gamma is None else model.gamma
        M = G * S
        dQ = -2 * gamma * (M.sum(-1, keepdim=True) * Q - M @ K)
    return torch.einsum("inD,ihnd->hDd", X, dQ)
