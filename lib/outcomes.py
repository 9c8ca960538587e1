"""Budget-independent outcomes of many training runs: reached, stalled (finite or at
infinity), or still descending.

A run that has not reached the global minimum after a fixed number of GD steps may be
stuck or only slow. ``run_to_outcome`` separates the two: after the GD phase it
continues every model with a **monotone adaptive-step** descent (``monotone_descent``:
Levenberg-Marquardt steps, accepted only if they lower the loss, with a damping that
shrinks after an accepted step and grows after a rejected one), which converges in a few
dozen steps where GD with a fixed step crawls, and then labels each run by what
happened, not by where the budget ran out:

* ``"reached"``: f <= ``reach_tol`` * f(theta_0), the global minimum 0 (of realisable
  targets) up to rounding;
* ``"stalled-finite"``: the loss stopped decreasing (relative decrease over the last
  quarter of the continuation below ``stall_tol``) with no attention row saturated: a
  stationary point at finite weights. ``hessian_check`` then classifies it from the
  exact Hessian (local minimum, saddle, flat);
* ``"stalled-infinity"``: the loss stopped decreasing while some attention row
  saturates: a Softmax row with a weight above 1 - ``saturation_tol``, or a Gaussian row
  whose entries are all below ``saturation_tol``. The loss approaches its value on a
  plateau at infinite weights;
* ``"descending"``: none of these; ``decades_left`` (log10 of f / (``reach_tol`` f_0))
  and ``rate`` (decades per 1000 continuation iterations over the last quarter) say how
  far it has to go.

    outcome = run_to_outcome(model, X, Y, ("W_Q",), gd_steps=200, iterations=40)
    outcome.label        # (M,) array of the four labels
    outcome.counts()     # {"reached": ..., ...}

``classify_outcomes`` is the labelling rule alone (numpy in, numpy out), for tests and
re-checks of recorded runs.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .attention import attention_matrix
from .batched import BatchedAttentionLayer, train_batched
from .hessian import full_hessian
from .validation import check_positive_float, check_positive_int

__all__ = [
    "LABELS",
    "Outcome",
    "classify_outcomes",
    "saturation",
    "monotone_descent",
    "run_to_outcome",
    "hessian_check",
    "gauss_newton_curvature",
]

LABELS = ("reached", "stalled-finite", "stalled-infinity", "descending")


def _losses(
    model: BatchedAttentionLayer, X: torch.Tensor, Y: torch.Tensor
) -> torch.Tensor:
    """(M,) f_m = 1/(2N) sum ||MH_m(X_m) - Y_m||^2."""
    return 0.5 * ((model(X) - Y) ** 2).sum(dim=(1, 2, 3)) / X.shape[-3]


@torch.no_grad()
def saturation(model: BatchedAttentionLayer, X: torch.Tensor) -> np.ndarray:
    """(M,) how close each model is to a plateau at infinity, over all its attention
    rows.

    Softmax: min over rows of 1 - (largest weight of the row) (0 = a one-hot row).
    Gaussian: min over rows of the largest entry of the row (0 = a row whose entries all
    vanish). Other kernels: the Softmax measure of the rows normalised to sum 1.
    """
    S = model.attention(X)  # (M, N, H, n, n)
    top = S.amax(dim=-1)
    if model.kernel == "gaussian":
        return top.flatten(1).amin(dim=1).cpu().numpy()
    if model.kernel != "softmax":
        top = top / S.sum(dim=-1)
    return (1 - top).flatten(1).amin(dim=1).cpu().numpy()


def _forward_one(
    weights: dict, X: torch.Tensor, kernel: str, gamma: float
) -> torch.Tensor:
    """One model's output from its weights {W_Q, W_K, W_V: (H, D, .), W_O: (H d_v,
    d_out)}.
    X: (N, n, D) -> (N, n, d_out); the formulas of ``lib.model.AttentionLayer``."""
    Q = torch.einsum("bnD,hDd->bhnd", X, weights["W_Q"])
    K = torch.einsum("bnD,hDd->bhnd", X, weights["W_K"])
    if kernel == "softmax":  # written out: torch.func batches this form much faster
        scores = Q @ K.transpose(-1, -2) / Q.shape[-1] ** 0.5
        E = torch.exp(scores - scores.detach().amax(dim=-1, keepdim=True))
        S = E / E.sum(dim=-1, keepdim=True)
    else:
        S = attention_matrix(Q, K, kernel, gamma=gamma)
    heads = S @ torch.einsum("bnD,hDv->bhnv", X, weights["W_V"])
    N, H, n, d_v = heads.shape
    return heads.permute(0, 2, 1, 3).reshape(N, n, H * d_v) @ weights["W_O"]


def _residual_fns(
    model: BatchedAttentionLayer, X: torch.Tensor, trainable: Sequence[str]
):
    """Batched residual and Jacobian functions of the trainable weights
    (torch.func.vmap)."""
    names = tuple(trainable)
    unknown = [k for k in names if k not in ("W_Q", "W_K", "W_V", "W_O")]
    if not names or unknown:
        raise ValueError(
            f"trainable must name some of W_Q, W_K, W_V, W_O, got {trainable!r}"
        )
    Xb = X if X.dim() == 4 else X.expand(model.M, *X.shape)
    fixed = {
        k: getattr(model, k).detach()
        for k in ("W_Q", "W_K", "W_V", "W_O")
        if k not in names
    }

    def residual(
        train: dict, rest: dict, x: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        return (
            _forward_one({**train, **rest}, x, model.kernel, model.gamma) - y
        ).reshape(-1)

    return (
        torch.func.vmap(residual),
        torch.func.vmap(torch.func.jacrev(residual)),
        fixed,
        Xb,
    )


def _jacobian(
    jac, params: dict, fixed: dict, Xb: torch.Tensor, Y: torch.Tensor
) -> torch.Tensor:
    M = Xb.shape[0]
    return torch.cat(
        [
            j.reshape(M, -1, params[k][0].numel())
            for k, j in jac(params, fixed, Xb, Y).items()
        ],
        dim=2,
    )


@torch.no_grad()
def gauss_newton_curvature(
    model: BatchedAttentionLayer,
    X: torch.Tensor,
    Y: torch.Tensor,
    trainable: Sequence[str],
) -> np.ndarray:
    """(M,) largest eigenvalue of the Gauss-Newton matrix J^T J / N of every model's
    loss in the trainable weights (J: Jacobian of the residuals): the curvature of f at
    a zero-residual point,
    and a cheap stand-in for the Hessian's elsewhere."""
    res, jac, fixed, Xb = _residual_fns(model, X, trainable)
    params = {k: getattr(model, k).detach() for k in trainable}
    J = _jacobian(jac, params, fixed, Xb, Y)
    return (
        (torch.linalg.eigvalsh(J @ J.transpose(1, 2))[:, -1] / Xb.shape[1])
        .cpu()
        .numpy()
    )


def monotone_descent(
    model: BatchedAttentionLayer,
    X: torch.Tensor,
    Y: torch.Tensor,
    trainable: Sequence[str],
    *,
    iterations: int,
    damping: float = 1.0,
) -> dict[str, np.ndarray]:
    """Monotone adaptive-step continuation of every model (in place):
    Levenberg-Marquardt steps.

    Model m takes the trial step delta = -J^T (J J^T + lam_m I)^{-1} r (r: its
    residuals, J: their Jacobian in the trainable weights; a gradient step whose size
    and direction adapt to the local curvature). The step is accepted only if it lowers
    f_m (then lam_m /= 3), else rejected (lam_m *= 4), so the loss never increases.
    ``damping``: the initial lam relative to the largest eigenvalue of J J^T. X: (M, N,
    n, D) or (N, n, D); Y: (M, N, n, d_out). Returns {"loss": (iterations + 1, M),
    "grad": (M,) final gradient norms}.
    """
    iterations = check_positive_int(iterations, "iterations")
    damping = check_positive_float(damping, "damping")
    M, names = model.M, tuple(trainable)
    res, jac, fixed, Xb = _residual_fns(model, X, trainable)
    N = Xb.shape[1]
    params = {k: getattr(model, k).detach().clone() for k in names}
    record = np.empty((iterations + 1, M))
    lam = None
    for it in range(iterations + 1):
        r = res(params, fixed, Xb, Y)  # (M, R)
        f = 0.5 * (r**2).sum(1) / N
        record[it] = f.cpu().numpy()
        J = _jacobian(jac, params, fixed, Xb, Y)
        grad = torch.einsum("mrp,mr->mp", J, r) / N
        if it == iterations:
            break
        JJ = J @ J.transpose(1, 2)
        if lam is None:
            lam = damping * torch.linalg.eigvalsh(JJ)[:, -1].clamp_min(1e-300)
        eye = torch.eye(JJ.shape[1], dtype=JJ.dtype, device=JJ.device)
        a = torch.linalg.solve(JJ + lam[:, None, None] * eye, r.unsqueeze(-1))
        step = -(J.transpose(1, 2) @ a).squeeze(-1)  # (M, P)
        trial, offset = {}, 0
        for k in names:
            size = params[k][0].numel()
            trial[k] = params[k] + step[:, offset : offset + size].reshape(
                params[k].shape
            )
            offset += size
        f_new = 0.5 * (res(trial, fixed, Xb, Y) ** 2).sum(1) / N
        ok = torch.isfinite(f_new) & (f_new < f)
        for k in names:
            params[k] = torch.where(
                ok.view((M,) + (1,) * (params[k].dim() - 1)), trial[k], params[k]
            )
        lam = torch.where(ok, lam / 3, lam * 4).clamp(1e-300, 1e300)
    with torch.no_grad():
        for k in names:
            getattr(model, k).copy_(params[k])
    return {"loss": record, "grad": grad.norm(dim=1).cpu().numpy()}


@dataclass
class Outcome:
    """Labelled outcomes of M runs (all arrays (M,)).

    label: one of ``LABELS``; f0, f_end: initial and final loss; grad_end: final
    gradient norm; saturation: see ``saturation``; decrease: relative loss decrease over
    the last quarter of the continuation; decades_left, rate: for descending runs,
    log10(f_end / (reach_tol f0)) and decades per 1000 iterations; hessian_kind: "local
    min" / "saddle" / "flat" for stalled-finite runs once ``hessian_check`` has run (""
    otherwise); weights: the final trained weights {name: (M, ...)}.
    """

    label: np.ndarray
    f0: np.ndarray
    f_end: np.ndarray
    grad_end: np.ndarray
    saturation: np.ndarray
    decrease: np.ndarray
    decades_left: np.ndarray
    rate: np.ndarray
    hessian_kind: np.ndarray
    weights: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {name: int((self.label == name).sum()) for name in LABELS}


def classify_outcomes(
    f0: np.ndarray,
    loss_tail: np.ndarray,
    saturation_end: np.ndarray,
    *,
    reach_tol: float = 1e-10,
    stall_tol: float = 1e-9,
    saturation_tol: float = 1e-3,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The labelling rule. f0: (M,); loss_tail: (T, M) losses over the last part of the
    continuation (T >= 2, in iteration order, T - 1 iterations apart from first to
    last); saturation_end: (M,).

    Returns (label, decrease, decades_left, rate), each (M,); decrease = 1 - f_last /
    f_first of the tail; rate in decades per 1000 iterations.
    """
    f0, tail, sat = (
        np.asarray(a, dtype=float) for a in (f0, loss_tail, saturation_end)
    )
    if (
        tail.ndim != 2
        or tail.shape[0] < 2
        or tail.shape[1] != f0.shape[0]
        or sat.shape != f0.shape
    ):
        raise ValueError(
            "need f0 (M,), loss_tail (T >= 2, M), saturation_end (M,); got "
            f"{f0.shape}, "
            f"{tail.shape}, {sat.shape}"
        )
    first, last = tail[0], tail[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        decrease = np.where(first > 0, 1 - last / first, 0.0)
        decades_left = np.log10(np.maximum(last, 1e-300) / (reach_tol * f0))
        rate = (
            1000
            * np.log10(np.maximum(first, 1e-300) / np.maximum(last, 1e-300))
            / (tail.shape[0] - 1)
        )
    reached = last <= reach_tol * f0
    stalled = ~reached & (decrease < stall_tol)
    label = np.full(f0.shape, "descending", dtype=object)
    label[reached] = "reached"
    label[stalled & (sat < saturation_tol)] = "stalled-infinity"
    label[stalled & (sat >= saturation_tol)] = "stalled-finite"
    return label.astype("<U16"), decrease, np.where(reached, 0.0, decades_left), rate


def hessian_check(
    model: BatchedAttentionLayer,
    X: torch.Tensor,
    Y: torch.Tensor,
    trainable: Sequence[str],
    which: Sequence[int],
    *,
    rel_tol: float = 1e-6,
) -> dict[int, tuple[str, float, float]]:
    """For models ``which``: (kind, smallest eigenvalue, largest |eigenvalue|) of the
    exact Hessian in ``trainable`` (``lib.hessian.full_hessian``). kind: "flat" if every
    |eigenvalue| <= rel_tol, "saddle" if the smallest is below -rel_tol times the
    largest |eigenvalue|, else "local min".
    """
    out = {}
    for m in which:
        Xm = X[m] if X.dim() == 4 else X
        eig = torch.linalg.eigvalsh(
            full_hessian(model.layer(int(m)), Xm, Y[m], tuple(trainable))
        )
        top = eig.abs().max().item()
        low = eig[0].item()
        kind = (
            "flat"
            if top <= rel_tol
            else ("saddle" if low < -rel_tol * top else "local min")
        )
        out[int(m)] = (kind, low, top)
    return out


def run_to_outcome(
    model: BatchedAttentionLayer,
    X: torch.Tensor,
    Y: torch.Tensor,
    trainable: Sequence[str],
    *,
    gd_steps: int,
    iterations: int,
    lr: float | np.ndarray | None = None,
    check_hessian: bool = True,
    **tolerances: float,
) -> Outcome:
    """GD for ``gd_steps`` (``lib.batched.train_batched``; step sizes ``lr``, default
    0.5 / ``gauss_newton_curvature`` at the start), then ``monotone_descent`` for
    ``iterations`` trials; label every model with ``classify_outcomes`` (keyword
    ``tolerances``: reach_tol, stall_tol, saturation_tol) and, if ``check_hessian``,
    classify the stalled-finite ones with ``hessian_check``. Trains in place.
    X: (M, N, n, D) or (N, n, D); Y: (M, N, n, d_out)."""
    gd_steps = check_positive_int(gd_steps, "gd_steps")
    iterations = check_positive_int(iterations, "iterations")
    if iterations < 8:
        raise ValueError(
            "iterations must be at least 8 (the last quarter labels the run), got "
            f"{iterations}"
        )
    with torch.no_grad():
        f0 = _losses(model, X, Y).cpu().numpy()
    if lr is None:
        lr = 0.5 / gauss_newton_curvature(model, X, Y, trainable)
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", RuntimeWarning
        )  # diverged models are frozen and labelled
        train_batched(model, X, Y, steps=gd_steps, lr=lr, trainable=tuple(trainable))
    cont = monotone_descent(model, X, Y, trainable, iterations=iterations)
    tail = cont["loss"][-(iterations // 4 + 1) :]
    sat = saturation(model, X)
    label, decrease, left, rate = classify_outcomes(f0, tail, sat, **tolerances)
    kinds = np.full(model.M, "", dtype=object)
    if check_hessian:
        stalled = np.flatnonzero(label == "stalled-finite")
        for m, (kind, _, _) in hessian_check(model, X, Y, trainable, stalled).items():
            kinds[m] = kind
    weights = {name: getattr(model, name).detach().clone() for name in trainable}
    return Outcome(
        label,
        f0,
        cont["loss"][-1],
        cont["grad"],
        sat,
        decrease,
        left,
        rate,
        kinds.astype(str),
        weights,
    )
