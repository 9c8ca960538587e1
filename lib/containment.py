"""The trajectory-containment condition of the chapter on training everything.

GD on (W_Q, W_K, W_V) with W_O fixed stays in a ball around the initial attention
weights a_0 = (W_Q, W_K), keeps lambda_B >= lambda_B(0)/2 and converges linearly, if

    R* = 4 N G sqrt(f_0) / (lambda_B(0) sigma^2)   and   Lip_B R* <= (1 - 1/sqrt 2)
    sqrt(lambda_B(0)),

with Lip_B a Lipschitz constant of a -> B on the ball of radius R* (spectral norm of B)
and G a bound of ||grad_a f|| / sqrt(f) there. ``containment_ratio`` evaluates the left
side divided by the right side (<= 1: the condition holds) from estimates of Lip_B and
G:

* ``b_derivative_norm``: ||D_a B(a)||, the norm of the derivative of a -> B (Frobenius
  to Frobenius, an upper bound of its Frobenius-to-spectral norm) at the current
  weights, by power iteration with forward- and reverse-mode products. It is a *lower*
  estimate of the Lipschitz constant on a ball (the supremum of the derivative norm
  there);
* ``attention_gradient_ratio``: ||grad_a f|| / sqrt(f) at the current weights.

``measured_containment`` evaluates the condition on recorded runs and
``containment_report`` describes the result in three lines.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .attention import attention_matrix
from .batched import BatchedAttentionLayer, per_model_loss
from .validation import check_positive_int

__all__ = [
    "b_of_attention",
    "b_derivative_norm",
    "attention_gradient_ratio",
    "containment_ratio",
    "measured_containment",
    "containment_at_init",
    "containment_report",
]


def b_of_attention(
    model: BatchedAttentionLayer, W_Q: torch.Tensor, W_K: torch.Tensor, X: torch.Tensor
) -> torch.Tensor:
    """B of every model for the attention weights W_Q, W_K: (M, H, D, d) each; X: (M, N,
    n, D) or
    (N, n, D) -> (M, N n, H D) (the other weights do not enter B)."""
    Xb = X if X.dim() == 4 else X.expand(model.M, *X.shape)
    Q = torch.einsum("mbnD,mhDd->mbhnd", Xb, W_Q)
    K = torch.einsum("mbnD,mhDd->mbhnd", Xb, W_K)
    gamma = model.gamma if model.kernel.startswith("gaussian") else None
    SX = attention_matrix(Q, K, model.kernel, gamma=gamma) @ Xb.unsqueeze(
        2
    )  # (M, N, H, n, D)
    M, N, H, n, D = SX.shape
    return SX.permute(0, 1, 3, 2, 4).reshape(M, N * n, H * D)


def b_derivative_norm(
    model: BatchedAttentionLayer, X: torch.Tensor, *, iters: int = 30, seed: int = 0
) -> torch.Tensor:
    """(M,) ||D_a B|| at the current attention weights of every model (power iteration
    on
    (DB)^* DB from a seeded random direction; approaches the norm from below)."""
    iters = check_positive_int(iters, "iters")
    a = (model.W_Q.detach(), model.W_K.detach())
    fn = lambda q, k: b_of_attention(model, q, k, X)  # noqa: E731
    gen = torch.Generator().manual_seed(seed)
    v = [torch.randn(t.shape, generator=gen, dtype=t.dtype).to(t.device) for t in a]
    M = model.M
    norm = lambda ts: torch.sqrt(
        sum((t.reshape(M, -1) ** 2).sum(1) for t in ts)
    )  # noqa: E731
    _, pullback = torch.func.vjp(fn, *a)
    for _ in range(iters):
        scale = norm(v).view(M, 1, 1, 1)
        v = [t / scale for t in v]
        _, Jv = torch.func.jvp(fn, a, tuple(v))
        v = list(pullback(Jv))
    scale = norm(v).view(M, 1, 1, 1)
    _, Jv = torch.func.jvp(fn, a, tuple(t / scale for t in v))
    return Jv.reshape(M, -1).norm(dim=1)


def attention_gradient_ratio(
    model: BatchedAttentionLayer, X: torch.Tensor, Y: torch.Tensor
) -> torch.Tensor:
    """(M,) ||grad_{(W_Q, W_K)} f|| / sqrt(f) at the current weights."""
    params = (model.W_Q, model.W_K)
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(True)
        with torch.enable_grad():
            f = per_model_loss(model, X, Y)
            grads = torch.autograd.grad(f.sum(), params)
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
    g = torch.sqrt(sum((t.reshape(model.M, -1) ** 2).sum(1) for t in grads))
    return (g / f.detach().sqrt()).detach()


def containment_ratio(
    lambda0, f0, sigma, lip, grad_ratio, N: int
) -> dict[str, np.ndarray]:
    """The condition of the containment proposition, per model (all arguments (M,) or
    scalars).

    Returns {"radius": R* = 4 N G sqrt(f0) / (lambda0 sigma^2),
             "ratio": Lip_B R* / ((1 - 1/sqrt 2) sqrt(lambda0))}; ratio <= 1 means the
             condition holds
    (for constants valid on the ball of radius R*).
    """
    lam, f, s, L, G = (
        np.asarray(torch.as_tensor(v).detach().cpu(), dtype=float)
        for v in (lambda0, f0, sigma, lip, grad_ratio)
    )
    if (lam <= 0).any() or (s <= 0).any():
        raise ValueError(
            "lambda0 and sigma must be positive (the condition needs lambda_B(0) > 0)"
        )
    radius = 4 * N * G * np.sqrt(f) / (lam * s**2)
    return {
        "radius": radius,
        "ratio": L * radius / ((1 - 1 / math.sqrt(2)) * np.sqrt(lam)),
    }


def measured_containment(
    run: dict, model: BatchedAttentionLayer, X: torch.Tensor, N: int
) -> dict[str, np.ndarray]:
    """The containment condition for recorded GD runs (``lib.training_paths.run_path``;
    W_O fixed, sigma = 1): Lip_B as the larger of the derivative norm at a_0 and the
    largest ||B(a_t) - B(a_0)|| / ||a_t - a_0|| met along the path, G as the largest
    ||grad_a f|| / sqrt(f) along the path. ``model`` holds the initial weights.
    Returns {"ratio", "radius": per run; "travelled": max_t ||a_t - a_0||; "kept":
    lambda_B(t) >= lambda_B(0)/2 throughout; "weyl": min over t of sqrt(lambda_B(t)) -
    (sqrt(lambda_B(0)) - ||B(a_t) - B(a_0)||_2), which Weyl's inequality makes >= 0}."""
    lam0, f0 = run["lambda_b"][0], run["loss"][0]
    with np.errstate(invalid="ignore", divide="ignore"):
        lip = np.maximum(
            b_derivative_norm(model, X).cpu().numpy(),
            np.nanmax(run["dB"][1:] / run["da"][1:], axis=0),
        )
    G = np.nanmax(np.sqrt(run["grad_a_sq"] / run["loss"]), axis=0)
    out = containment_ratio(lam0, f0, 1.0, lip, G, N)
    out["travelled"] = np.nanmax(run["da"], axis=0)
    out["kept"] = run["lambda_b"].min(0) >= lam0 / 2
    out["weyl"] = np.nanmin(
        np.sqrt(run["lambda_b"]) - (np.sqrt(lam0) - run["dB"]), axis=0
    )
    return out


def containment_at_init(
    kernel: str,
    D: int,
    scale: float,
    *,
    seeds=range(4),
    N: int = 4,
    n: int = 4,
    H: int = 2,
    device=None,
) -> np.ndarray:
    """The ratio of the containment condition at initialization (estimates at a_0) for
    random regression problems (``lib.data.stacked_random_problems``), orthogonal
    initializations with attention scale ``scale``; one value per seed."""
    from .data import stacked_random_problems
    from .theory import batched_gram_extremes

    X, Y = stacked_random_problems(list(seeds), N, n, D, device=device)
    model = BatchedAttentionLayer(
        len(seeds),
        D,
        H=H,
        kernel=kernel,
        init="orthogonal",
        qk_scale=scale,
        seeds=[1000 + s for s in seeds],
        device=device,
    )
    with torch.no_grad():
        lam0, f0 = batched_gram_extremes(model, X)[0], per_model_loss(model, X, Y)
    lip, G = b_derivative_norm(model, X, iters=20), attention_gradient_ratio(
        model, X, Y
    )
    return containment_ratio(lam0, f0, 1.0, lip, G, N)["ratio"]


# ------------------------------------------------------------ the printed summary
def containment_report(measured: dict, label: str) -> str:
    """Three lines on ``measured_containment``: the ratio of the two sides per run, the
    median R* and the distance the attention travelled per run, in how many runs
    lambda_B(t) >= lambda_B(0)/2 throughout, and the smallest slack of Weyl's bound.
    ``label`` starts the first line."""
    missing = {"ratio", "radius", "travelled", "kept", "weyl"} - set(measured)
    if missing:
        raise ValueError(f"measured must come from measured_containment; missing "
                         f"{sorted(missing)}")
    m, pad = measured, " " * 9
    return (f"{label} condition (everything-eq-containment): left / right = "
            + ", ".join(f"{v:.0e}" for v in m["ratio"]) + " (<= 1 needed);\n"
            f"{pad}R* = {np.median(m['radius']):.0e}, distance travelled by the "
            "attention " + ", ".join(f"{v:.2f}" for v in m["travelled"]) + ";\n"
            f"{pad}lambda_B(t) >= lambda_B(0)/2 throughout: {m['kept'].sum()} of "
            f"{m['kept'].size} runs; min of Weyl's slack {m['weyl'].min():.1e}"
            " (>= -1e-12)")
