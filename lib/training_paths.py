"""GD trajectories with the quantities of the convergence analysis recorded at every
step.

``run_path`` trains every model of a batched layer with eta_m = step_factor / L_m (L_m
the smoothness constant at the start, ``lib.hessian.smoothness``) and records, per step
and model: the loss, the squared gradient norm (all trained blocks, and the attention
blocks W_Q, W_K alone), lambda_B(t), sigma_t, ||B(t) - B(0)||_2 and ||a_t - a_0||_F for
a = (W_Q, W_K). ``path_bounds``, ``decrease_ratios`` and ``path_summary`` evaluate the
proposition on linear convergence along the path from such a record; ``path_report``
describes it in four lines; ``plot_paths`` draws it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .batched import BatchedAttentionLayer, train_batched
from .hessian import smoothness
from .theory import batched_b_matrix, batched_gram_extremes, sigma_min_wo
from .validation import check_positive_float, check_positive_int

__all__ = [
    "run_path",
    "path_bounds",
    "decrease_ratios",
    "path_summary",
    "plot_paths",
    "value_block_pl_ratios",
    "path_report",
]


def _attention(model: BatchedAttentionLayer) -> torch.Tensor:
    return torch.cat(
        [model.W_Q.detach().flatten(1), model.W_K.detach().flatten(1)], dim=1
    )


def run_path(
    model: BatchedAttentionLayer,
    X: torch.Tensor,
    Y: torch.Tensor,
    trainable: Sequence[str],
    *,
    steps: int,
    step_factor: float = 0.5,
) -> dict:
    """Train ``model`` in place; returns {"loss", "grad_sq", "grad_a_sq", "lambda_b",
    "sigma", "dB",
    "da": (steps + 1, M) arrays; "lr": (M,); "status": list}."""
    steps = check_positive_int(steps, "steps")
    step_factor = check_positive_float(step_factor, "step_factor")
    lr = (step_factor / smoothness(model, X, Y, tuple(trainable))).cpu().numpy()
    B0, a0 = batched_b_matrix(model, X).detach(), _attention(model)

    def record(state) -> dict:
        with torch.no_grad():
            B = batched_b_matrix(state.model, X)
            return {
                "lambda_b": batched_gram_extremes(state.model, X)[0],
                "sigma": sigma_min_wo(state.model),
                "dB": torch.linalg.matrix_norm(B - B0, 2),
                "da": (_attention(state.model) - a0).norm(dim=1),
            }

    hist = train_batched(
        model, X, Y, steps=steps, lr=lr, trainable=tuple(trainable), callbacks=[record]
    )
    grads = hist.grad_norms
    out = dict(
        loss=hist.loss,
        grad_sq=sum(g**2 for g in grads.values()),
        lr=lr,
        grad_a_sq=sum(grads[k] ** 2 for k in ("W_Q", "W_K") if k in grads),
        status=hist.status,
    )
    out.update({k: hist.diagnostics[k] for k in ("lambda_b", "sigma", "dB", "da")})
    return out


def path_bounds(run: dict, N: int) -> tuple[np.ndarray, np.ndarray]:
    """Statement 1 (product of the factors 1 - eta mu_t) and statement 2 with running
    minima of lambda_B and sigma, as (steps + 1, M) arrays of loss bounds; mu_t =
    lambda_B(t) sigma_t^2 / N.
    """
    lam, sig, lr, f0 = run["lambda_b"], run["sigma"], run["lr"], run["loss"][0]
    factors = 1 - lr * lam * sig**2 / N
    product = f0 * np.vstack([np.ones_like(f0), np.cumprod(factors[:-1], axis=0)])
    mu_bar = (
        np.minimum.accumulate(lam, axis=0) * np.minimum.accumulate(sig, axis=0) ** 2 / N
    )
    t = np.arange(lam.shape[0])[:, None]
    running = f0 * (1 - lr * np.vstack([mu_bar[:1], mu_bar[:-1]])) ** t
    return product, running


def decrease_ratios(run: dict) -> np.ndarray:
    """(f_t - f_{t+1}) / (eta/2 ||grad f_t||^2), (steps, M): the decrease condition asks
    for >= 1."""
    loss = run["loss"]
    return (loss[:-1] - loss[1:]) / (0.5 * run["lr"] * run["grad_sq"][:-1])


def path_summary(run: dict, N: int) -> dict:
    """What the proposition says about a recorded run, up to the first step of each
    model that violates the decrease condition: {"violated": models that violate it
    somewhere, "first_bad": (M,) first violating step (steps if none), "smallest_ratio":
    the smallest decrease ratio of the others, "slack": max over models and steps up to
    the first violation of f_t / bound - 1 (both bounds), "still": how many violating
    models still stay below the product bound, "observed", "guaranteed": median per-step
    factors (measured, and of the running-minimum bound)}.
    """
    product, running = path_bounds(run, N)
    loss, dec = run["loss"], decrease_ratios(run)
    steps, M = dec.shape
    bad = dec < 1
    first_bad = np.where(bad.any(0), bad.argmax(0), steps)
    slack = (
        max(
            max(
                np.max(loss[: first_bad[m] + 1, m] / product[: first_bad[m] + 1, m]),
                np.max(loss[: first_bad[m] + 1, m] / running[: first_bad[m] + 1, m]),
            )
            for m in range(M)
        )
        - 1
    )
    violated = [m for m in range(M) if first_bad[m] < steps]
    ok = [m for m in range(M) if m not in violated]
    return {
        "violated": violated,
        "first_bad": first_bad,
        "slack": slack,
        "smallest_ratio": float(dec[:, ok].min()) if ok else float("nan"),
        "still": sum(
            bool(np.all(loss[:, m] <= product[:, m] * (1 + 1e-9))) for m in violated
        ),
        "observed": float(np.median((loss[-1] / loss[0]) ** (1 / steps))),
        "guaranteed": float(np.median((running[-1] / loss[0]) ** (1 / steps))),
    }


def plot_paths(
    runs: dict,
    N: int,
    *,
    right: str = "lambda_b",
    bound_label: str = "bound, running minimum",
):
    """Two panels for {kernel: run}: the relative loss with the product bound (dashed)
    and, unless bound_label is empty, the running-minimum bound (dotted); right panel
    lambda_B(t) / lambda_B(0)
    (``right="lambda_b"``) or sigma_t (``right="sigma"``). Returns the figure."""
    from .plotting import KERNEL_COLORS, KERNEL_LABELS, new_figure

    fig, axes = new_figure(2, 1, width=4.6, height=3.4)
    for kernel, run in runs.items():
        color, name = KERNEL_COLORS[kernel], KERNEL_LABELS[kernel]
        product, running = path_bounds(run, N)
        steps, f0 = np.arange(run["loss"].shape[0]), run["loss"][0]
        for m in range(f0.size):
            first = m == 0
            axes[0].plot(
                steps,
                run["loss"][:, m] / f0[m],
                color=color,
                lw=1.2,
                label=f"{name}: loss" if first else None,
            )
            axes[0].plot(
                steps,
                product[:, m] / f0[m],
                color=color,
                lw=1,
                ls="--",
                label=f"{name}: bound, product" if first else None,
            )
            if bound_label:
                axes[0].plot(
                    steps,
                    running[:, m] / f0[m],
                    color=color,
                    lw=1,
                    ls=":",
                    label=f"{name}: {bound_label}" if first else None,
                )
            values = run[right][:, m] / (
                run[right][0, m] if right == "lambda_b" else 1.0
            )
            axes[1].plot(
                steps, values, color=color, lw=1.2, label=name if first else None
            )
    axes[0].set_yscale("log")
    axes[0].set_ylabel(r"$f(\theta_t)\,/\,f(\theta_0)$")
    axes[0].legend(fontsize=7, loc="lower left")
    if right == "lambda_b":
        axes[1].axhline(0.5, color="grey", lw=1, ls="--")
        axes[1].text(
            steps[-1],
            0.55,
            r"$\lambda_B(0)/2$",
            ha="right",
            va="bottom",
            fontsize=8,
            color="grey",
        )
        axes[1].set_yscale("log")
        axes[1].set_ylabel(r"$\lambda_B(t)\,/\,\lambda_B(0)$")
    else:
        axes[1].set_ylim(0, 1.05)
        axes[1].set_ylabel(r"$\sigma_t = \min_h \sigma_{\min}(W_O^h(t))$")
    for ax in axes:
        ax.set_xlabel("GD step t")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def value_block_pl_ratios(
    kernel: str, *, trials: int = 20, seed: int = 1, device=None
) -> tuple[float, float]:
    """The lemma ||grad_{W_V} f||^2 >= 2 mu f, mu = lambda_B sigma^2 / N, checked on a
    wide shape (N = 3, n = 4, D = 8, H = 2): (the smallest ratio ||grad_{W_V} f||^2 / (2
    mu f) over ``trials`` random points, LeCun initialization and attention scales in
    [1/4, 2]; the ratio for orthogonal W_O blocks and a residual u a^T along the bottom
    eigenvector u of B B^T, where the lemma is an equality)."""
    from .data import random_problem
    from .model import AttentionLayer, squared_loss
    from .theory import b_matrix, lambda_b

    gen = torch.Generator().manual_seed(seed)
    ratios = []
    for k in range(trials):
        prob = random_problem(3, 4, 8, seed=100 + k, device=device)
        scale = float(2.0 ** (3 * torch.rand(1, generator=gen).item() - 2))
        model = AttentionLayer(
            8, H=2, kernel=kernel, qk_scale=scale, seed=200 + k, device=device
        )
        loss = squared_loss(model(prob.X), prob.Y)
        (grad_v,) = torch.autograd.grad(loss, model.W_V)
        W_O = model.W_O.detach().reshape(2, 8, 8)
        sigma = torch.linalg.svdvals(W_O)[:, -1].min().item()
        mu = lambda_b(model, prob.X) * sigma**2 / 3
        ratios.append((grad_v**2).sum().item() / (2 * mu * loss.item()))
    model = AttentionLayer(
        8, H=2, kernel=kernel, init="orthogonal", seed=300, device=device
    )
    X = random_problem(3, 4, 8, seed=301, device=device).X
    B = b_matrix(model, X)
    eig, U = torch.linalg.eigh(B @ B.T)
    a = torch.randn(8, generator=gen, dtype=torch.float64).to(X.device)
    with torch.no_grad():
        Y = model(X) - torch.outer(U[:, 0], a / a.norm()).reshape(3, 4, 8)
    loss = squared_loss(model(X), Y)
    (grad_v,) = torch.autograd.grad(loss, model.W_V)
    tight = (grad_v**2).sum().item() / (2 * eig[0].item() / 3 * loss.item())
    return min(ratios), tight


# ------------------------------------------------------------ the printed summary
def path_report(run: dict, summary: dict, label: str) -> str:
    """Four lines on a recorded run (``run_path``) and its ``path_summary``: in how
    many of the M models the decrease condition held at every step (and, for the
    others, where it first failed and whether the bound still held), the largest
    f_t / bound - 1 up to the first failure, f_T / f_0 and min_t lambda_B(t) /
    lambda_B(0) per model, and the median per-step factors (observed, guaranteed by
    the running-minimum bound). ``label`` starts the first line."""
    for key in ("violated", "first_bad", "smallest_ratio", "still", "slack",
                "observed", "guaranteed"):
        if key not in summary:
            raise ValueError(f"summary must come from path_summary; {key!r} missing")
    M, bad = run["loss"].shape[1], summary["violated"]
    first = sorted(summary["first_bad"][bad].tolist())
    failures = (f"; it first fails at steps {first}, and the bound still held in"
                f" {summary['still']} of those" if bad else "")
    lam_ratio = run["lambda_b"].min(0) / run["lambda_b"][0]
    pad = " " * 9
    return "\n".join([
        f"{label}: decrease condition held at every step in {M - len(bad)} of {M} runs"
        f" (smallest ratio in those: {summary['smallest_ratio']:.2f}){failures}",
        f"{pad}up to the first failure: max f_t / bound - 1 = {summary['slack']:.1e}"
        " (<= 1e-9)",
        f"{pad}f_T / f_0: "
        + ", ".join(f"{v:.0e}" for v in run["loss"][-1] / run["loss"][0]),
        f"{pad}min_t lambda_B(t) / lambda_B(0): "
        + ", ".join(f"{v:.2f}" for v in lam_ratio),
        f"{pad}median per-step factor: observed {summary['observed']:.5f}, guaranteed"
        f" (running minimum) {summary['guaranteed']:.6f}",
    ])
