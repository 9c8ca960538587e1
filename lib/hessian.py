"""Hessians of the training loss in a chosen subset of the weights, via ``torch.func``.

The trainable weights (e.g. ``("W_Q",)``) are flattened into one vector w (row-major, in
the order given); the other weights stay fixed at their current values. Then

* ``full_hessian``: the (P, P) matrix of second derivatives of f(w)
(``torch.func.hessian``);
* ``hvp``: a Hessian-vector product H v without forming H (forward-over-reverse:
  ``torch.func.jvp`` of ``torch.func.grad``), costing a few gradient evaluations;
* ``extreme_eigenvalues``: the largest and smallest eigenvalues by the Lanczos method
with full
  reorthogonalisation, using only Hessian-vector products (for models too large for
  ``full_hessian``);
* ``hessian_spectrum`` / ``curvature_summary``: the whole spectrum and a short
description of it
  (largest, smallest, how many directions of negative or zero curvature);
* ``batched_hessians``: the (M, P, P) Hessians of every model of a
  ``lib.batched.BatchedAttentionLayer`` at once (the summed loss has a block-diagonal
  Hessian);
* ``top_eigenvalue`` / ``smoothness``: the largest-magnitude Hessian eigenvalue by power
  iteration with Hessian-vector products, for one model or every model of a batched one.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from .batched_model import BatchedAttentionLayer, per_model_loss
from .model import WEIGHT_NAMES, functional_loss, squared_loss
from .training import trainable_only
from .validation import (
    check_names,
    check_number,
    check_positive_float,
    check_positive_int,
    check_seed,
    check_tensor,
)

__all__ = [
    "flatten_params",
    "unflatten_params",
    "loss_of_params",
    "full_hessian",
    "hvp",
    "hvp_operator",
    "LanczosInfo",
    "extreme_eigenvalues",
    "hessian_spectrum",
    "curvature_summary",
    "batched_hessians",
    "top_eigenvalue",
    "smoothness",
]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@contextlib.contextmanager
def _quiet_torch_internals() -> Iterator[None]:
    """Silence a DeprecationWarning that torch emits internally on the first
    forward-mode differentiation (it compiles its jvp decompositions with the
    deprecated ``torch.jit.script``)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated",
                                category=DeprecationWarning)
        yield


def _names(model: nn.Module, names: Sequence[str] | str) -> tuple[str, ...]:
    return check_names(model, names, "names (the trainable weights)",
                       noun="parameter name")


def flatten_params(model: nn.Module, names: Sequence[str] | str) -> torch.Tensor:
    """The named parameters concatenated into one vector (row-major, in the order of
    ``names``).

    Returns a detached copy: (P,) with P the total number of entries.
    """
    names = _names(model, names)
    named = dict(model.named_parameters())
    return torch.cat([named[name].detach().reshape(-1) for name in names]).clone()


def unflatten_params(model: nn.Module, names: Sequence[str] | str,
                     vector: torch.Tensor) -> dict[str, torch.Tensor]:
    """Split a (P,) vector into {name: tensor of that parameter's shape} (the
    inverse of ``flatten_params``).

    The tensors are views of ``vector``, so gradients flow back to it (this is what
    ``torch.func`` differentiates through).
    """
    names = _names(model, names)
    named = dict(model.named_parameters())
    if not isinstance(vector, torch.Tensor):
        raise TypeError(f"vector must be a torch.Tensor, got {type(vector).__name__}")
    total = sum(named[name].numel() for name in names)
    if vector.dim() != 1 or vector.shape[0] != total:
        raise ValueError(
            f"vector must have shape ({total},) for the parameters {names}, got"
            f" {tuple(vector.shape)}"
        )
    out, start = {}, 0
    for name in names:
        p = named[name]
        out[name] = vector[start : start + p.numel()].reshape(p.shape)
        start += p.numel()
    return out


def loss_of_params(
    model: nn.Module,
    X: torch.Tensor,
    Y: torch.Tensor,
    names: Sequence[str] | str,
    loss_fn: LossFn = squared_loss,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The loss as a function of the flattened named parameters: w (P,) ->
    loss_fn(model_w(X), Y).

    The other parameters (and buffers) are fixed at copies of their values at the
    time of the call. Evaluated with ``torch.func.functional_call``, so the function
    can be transformed by
    ``torch.func.grad`` / ``hessian`` / ``jvp``.
    """
    names = _names(model, names)
    loss_at = functional_loss(model, X, Y, loss_fn)
    return lambda vector: loss_at(unflatten_params(model, names, vector))


def full_hessian(
    model: nn.Module,
    X: torch.Tensor,
    Y: torch.Tensor,
    trainable: Sequence[str] | str = ("W_Q",),
    loss_fn: LossFn = squared_loss,
) -> torch.Tensor:
    """The (P, P) Hessian of the loss in the flattened ``trainable`` weights at
    their current values.

    Computed by ``torch.func.hessian`` (forward-over-reverse) and symmetrised, (H +
    H^T) / 2, which removes the rounding-level asymmetry of the two differentiation
    orders.
    """
    f = loss_of_params(model, X, Y, trainable, loss_fn)
    w = flatten_params(model, trainable)
    with _quiet_torch_internals():
        Hm = torch.func.hessian(f)(w)
    return 0.5 * (Hm + Hm.T)


def hvp_operator(
    model: nn.Module,
    X: torch.Tensor,
    Y: torch.Tensor,
    trainable: Sequence[str] | str = ("W_Q",),
    loss_fn: LossFn = squared_loss,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """v (P,) -> H v at the current weights, for repeated products (the loss closure
    is built once)."""
    f = loss_of_params(model, X, Y, trainable, loss_fn)
    w = flatten_params(model, trainable)
    grad_f = torch.func.grad(f)

    def product(v: torch.Tensor) -> torch.Tensor:
        if not isinstance(v, torch.Tensor) or v.shape != w.shape:
            raise ValueError(
                f"v must be a tensor of shape {tuple(w.shape)}, got"
                f" {getattr(v, 'shape', type(v).__name__)}"
            )
        with _quiet_torch_internals():
            return torch.func.jvp(grad_f, (w, ),
                                  (v.to(dtype=w.dtype, device=w.device), ))[1]

    return product


def hvp(
    model: nn.Module,
    X: torch.Tensor,
    Y: torch.Tensor,
    trainable: Sequence[str] | str,
    v: torch.Tensor,
    loss_fn: LossFn = squared_loss,
) -> torch.Tensor:
    """The Hessian-vector product H v: (P,), without forming H (``torch.func.jvp``
    of ``torch.func.grad``)."""
    return hvp_operator(model, X, Y, trainable, loss_fn)(v)


def _tridiagonal_eigh(alphas: list[float],
                      betas: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    j = len(alphas)
    T = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if j > 1:
        off = torch.tensor(betas[: j - 1], dtype=torch.float64)
        T = T + torch.diag(off, 1) + torch.diag(off, -1)
    return torch.linalg.eigh(T)


@dataclass(frozen=True)
class LanczosInfo:
    """How the Lanczos iteration of :func:`extreme_eigenvalues` ended: ``converged``
    (residual bounds <= tol x scale, or the whole space spanned), ``steps`` taken,
    the last ``residual`` bound, and ``scale`` (the largest |Ritz value| seen)."""

    converged: bool
    steps: int
    residual: float
    scale: float


def extreme_eigenvalues(
    model: nn.Module,
    X: torch.Tensor,
    Y: torch.Tensor,
    trainable: Sequence[str] | str = ("W_Q",),
    *,
    k: int = 1,
    iters: int | None = None,
    tol: float = 1e-10,
    seed: int = 0,
    loss_fn: LossFn = squared_loss,
    with_info: bool = False,
) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, LanczosInfo]:
    """The k largest and k smallest Hessian eigenvalues, from Hessian-vector
    products only.

    Lanczos iteration with full reorthogonalisation (every new vector is
    orthogonalised twice against all previous ones), started from a seeded Gaussian
    vector. After each step the Ritz values of the tridiagonal matrix T_j are
    computed; the iteration stops when the k largest and k smallest have residual
    bounds |beta_j s_j| <= tol * max|Ritz value| (then each is within that distance
    of a true eigenvalue), or after ``iters`` steps (default min(P, 200)), with a
    ``RuntimeWarning`` if not converged. Memory: the Krylov basis holds iters x P
    numbers. With iters = P the result is the exact spectrum's ends (up to
    rounding). If the Krylov space becomes invariant early, the iteration continues
    from a new random vector orthogonal to it, so eigenvalues that the start vector
    misses are still found.

    Returns (largest, smallest): float64 tensors of shape (k,), largest in
    descending order, smallest in ascending order. With ``with_info=True`` it
    returns (largest, smallest, info), a :class:`LanczosInfo`, and reports
    non-convergence there instead of by a warning.
    """
    k = check_positive_int(k, "k")
    tol = check_positive_float(tol, "tol")
    seed = check_seed(seed, "seed")
    product = hvp_operator(model, X, Y, trainable, loss_fn)
    w = flatten_params(model, trainable)
    P = w.numel()
    if k > P:
        raise ValueError(f"k = {k} exceeds the number of parameters P = {P}")
    iters = min(P, 200) if iters is None else min(check_positive_int(iters, "iters"), P)
    dtype, device = w.dtype, w.device
    gen = torch.Generator().manual_seed(seed)

    def random_vector() -> torch.Tensor:
        return torch.randn(P, generator=gen,
                           dtype=torch.float64).to(dtype=dtype, device=device)

    basis = torch.zeros(iters, P, dtype=dtype, device=device)
    q = random_vector()
    q = q / torch.linalg.vector_norm(q)
    alphas: list[float] = []
    betas: list[float] = []
    scale = 0.0
    converged = False
    residual = float("inf")
    for j in range(iters):
        basis[j] = q
        v = product(q)
        alpha = float(q @ v)
        alphas.append(alpha)
        v = v - alpha * q
        if j > 0:
            v = v - betas[j - 1] * basis[j - 1]
        for _ in range(2):  # full reorthogonalisation, twice
            v = v - basis[: j + 1].T @ (basis[: j + 1] @ v)
        beta = float(torch.linalg.vector_norm(v))
        theta, S = _tridiagonal_eigh(alphas, betas)
        scale = max(scale, float(theta.abs().max()), 1e-300)
        if j + 1 == P:
            converged = True
            break
        if j + 1 >= min(2 * k, P):
            ends = torch.cat([S[-1, :k], S[-1, -k:]]).abs()
            residual = float(beta * ends.max())
            if residual <= tol * scale:
                converged = True
                break
        if (
            beta <= 1e-12 * scale
        ):  # invariant subspace: restart orthogonally to the basis
            r = random_vector()
            for _ in range(2):
                r = r - basis[: j + 1].T @ (basis[: j + 1] @ r)
            q = r / torch.linalg.vector_norm(r)
            betas.append(0.0)
        else:
            q = v / beta
            betas.append(beta)
    if not converged and not with_info:
        warnings.warn(
            f"Lanczos did not converge in {iters} iterations (residual {residual:.2e} >"
            f" tol {tol:g} x {scale:.2e}); increase iters",
            RuntimeWarning,
            stacklevel=2,
        )
    theta = theta.to(torch.float64)
    count = min(k, theta.numel())
    largest, smallest = theta.flip(0)[:count].clone(), theta[:count].clone()
    if with_info:
        return largest, smallest, LanczosInfo(converged, len(alphas), residual, scale)
    return largest, smallest


def hessian_spectrum(
    model: nn.Module,
    X: torch.Tensor,
    Y: torch.Tensor,
    trainable: Sequence[str] | str = ("W_Q",),
    loss_fn: LossFn = squared_loss,
) -> torch.Tensor:
    """All P eigenvalues of ``full_hessian``, ascending."""
    return torch.linalg.eigvalsh(full_hessian(model, X, Y, trainable, loss_fn))


def curvature_summary(eigs: torch.Tensor,
                      tol: float | None = None) -> dict[str, float | int]:
    """A short description of a Hessian spectrum ``eigs`` (any order).

    tol: eigenvalues with |lambda| <= tol count as zero and only lambda < -tol as
    negative (default: 1e-8 x max|lambda|, a relative threshold). Returns
    top (largest), bottom (smallest), num_negative, num_zero, num_positive,
    negative_fraction (num_negative / P) and tol (the threshold used).
    """
    if not isinstance(eigs, torch.Tensor):
        eigs = torch.as_tensor(eigs, dtype=torch.float64)
    check_tensor(eigs, "eigs", ndim=1)
    if eigs.numel() == 0:
        raise ValueError("eigs must contain at least one eigenvalue")
    eigs = eigs.to(torch.float64)
    largest_abs = float(eigs.abs().max())
    if tol is None:
        tol = 1e-8 * largest_abs
    else:
        try:
            tol = check_number(tol, "tol", 0.0)
        except (TypeError, ValueError):
            raise ValueError(f"tol must be a finite number >= 0, got {tol!r}") from None
    num_negative = int((eigs < -tol).sum())
    num_zero = int((eigs.abs() <= tol).sum())
    return {
        "top": float(eigs.max()),
        "bottom": float(eigs.min()),
        "negative_fraction": num_negative / eigs.numel(),
        "num_negative": num_negative,
        "num_zero": num_zero,
        "num_positive": eigs.numel() - num_negative - num_zero,
        "tol": tol,
    }


# ------------------------------------------------ every model of a batched layer at
# once
def _model_losses(model: nn.Module, X: torch.Tensor, Y: torch.Tensor,
                  loss_fn: LossFn) -> torch.Tensor:
    """(M,): a batched model's per-model losses, or a single model's loss as M = 1."""
    if isinstance(model, BatchedAttentionLayer):
        return per_model_loss(model, X, Y)
    return loss_fn(model(X), Y).reshape(1)


@contextlib.contextmanager
def _summed_loss_gradients(
    model: nn.Module, X: torch.Tensor, Y: torch.Tensor, trainable: Sequence[str] | str,
    loss_fn: LossFn
) -> Iterator[tuple[list[torch.Tensor], tuple[torch.Tensor, ...], int]]:
    """Within the block: (the trained parameters, the gradients of the summed loss
    sum_m f_m with a graph for second derivatives, M). Only the trained parameters
    require gradients there."""
    names = _names(model, trainable)
    with trainable_only(model, names,
                        "names (the trainable weights)") as leaves, torch.enable_grad():
        losses = _model_losses(model, X, Y, loss_fn)
        yield leaves, torch.autograd.grad(losses.sum(), leaves,
                                          create_graph=True), losses.shape[0]


def batched_hessians(
    model: nn.Module,
    X: torch.Tensor,
    Y: torch.Tensor,
    trainable: Sequence[str] | str = ("W_Q",),
    loss_fn: LossFn = squared_loss,
) -> torch.Tensor:
    """The Hessians of every model's loss in its flattened ``trainable`` weights:
    (M, P, P).

    ``model``: a ``BatchedAttentionLayer`` (X, Y as for
    ``lib.batched.per_model_loss``; P counts one model's entries) or any single
    module (then M = 1 and ``loss_fn`` gives the loss). Entry m equals
    ``full_hessian(model.layer(m), X_m, Y_m, trainable)``: the summed loss sum_m f_m
    has a block-diagonal Hessian, so one reverse pass per column serves all models.
    Symmetrised.
    """
    with _summed_loss_gradients(model, X, Y, trainable, loss_fn) as (leaves, grads, M):
        flat = torch.cat([g.reshape(M, -1) for g in grads], dim=1)  # (M, P)
        columns = []
        for i in range(flat.shape[1]):  # column i of every model's Hessian at once
            hv = torch.autograd.grad(flat[:, i].sum(), leaves, retain_graph=True,
                                     allow_unused=True)
            columns.append(
                torch.cat([(torch.zeros_like(p) if h is None else h).reshape(M, -1)
                           for h, p in zip(hv, leaves)], dim=1))
    Hs = torch.stack(columns, dim=1).detach()
    return 0.5 * (Hs + Hs.transpose(1, 2))


def _power_iteration(
    model: nn.Module,
    X: torch.Tensor,
    Y: torch.Tensor,
    trainable: Sequence[str] | str,
    iters: int,
    seed: int,
    loss_fn: LossFn,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Power iteration on every model's Hessian: (Rayleigh quotients v.Hv, norms
    ||Hv||), each (M,), with v the unit vector after ``iters - 1`` multiplications
    of a seeded Gaussian start."""
    iters = check_positive_int(iters, "iters")
    seed = check_seed(seed, "seed")
    with _summed_loss_gradients(model, X, Y, trainable, loss_fn) as (leaves, grads, M):
        gen = torch.Generator().manual_seed(seed)
        v = [
            torch.randn(p.shape, generator=gen,
                        dtype=torch.float64).to(p.dtype).to(p.device) for p in leaves
        ]

        def norm(ts: list[torch.Tensor]) -> torch.Tensor:
            return torch.sqrt(sum((t.reshape(M, -1) ** 2).sum(1) for t in ts))

        for _ in range(iters):
            length = norm(v)
            v = [t / length.view((-1,) + (1,) * (t.dim() - 1)) for t in v]
            Hv = [
                h.detach() for h in torch.autograd.grad(grads, leaves, grad_outputs=v,
                                                        retain_graph=True)
            ]
            rayleigh = sum((a * b).reshape(M, -1).sum(1) for a, b in zip(Hv, v))
            v = Hv
    return rayleigh.detach(), norm(v).detach()


def top_eigenvalue(
    model: nn.Module,
    X: torch.Tensor,
    Y: torch.Tensor,
    trainable: Sequence[str] | str = WEIGHT_NAMES,
    *,
    iters: int = 60,
    seed: int = 0,
    loss_fn: LossFn = squared_loss,
) -> torch.Tensor | float:
    """The largest-magnitude Hessian eigenvalue (with its sign) by power iteration.

    ``iters`` Hessian-vector products from a seeded Gaussian vector; returns the
    Rayleigh quotient v.Hv of the last unit vector v. A ``BatchedAttentionLayer``
    gives a (M,) tensor (one product of the summed loss serves all models: its
    Hessian is block diagonal), a single model a float. Power iteration converges
    like (|lambda_2| / |lambda_1|)^iters; check against
    ``extreme_eigenvalues`` when the gap is small.
    """
    value, _ = _power_iteration(model, X, Y, trainable, iters, seed, loss_fn)
    return value if isinstance(model, BatchedAttentionLayer) else float(value[0])


def smoothness(
    model: nn.Module,
    X: torch.Tensor,
    Y: torch.Tensor,
    trainable: Sequence[str] | str = WEIGHT_NAMES,
    *,
    iters: int = 40,
    seed: int = 0,
    loss_fn: LossFn = squared_loss,
) -> torch.Tensor | float:
    """The smoothness constant L = max |Hessian eigenvalue|, estimated as ||H v||
    for the unit vector v of ``iters`` steps of power iteration (approaches L from
    below). (M,) tensor for a
    ``BatchedAttentionLayer``, a float for a single model."""
    _, magnitude = _power_iteration(model, X, Y, trainable, iters, seed, loss_fn)
    return magnitude if isinstance(model, BatchedAttentionLayer) else float(
        magnitude[0])
