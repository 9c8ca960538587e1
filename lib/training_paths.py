"""GD trajectories with the quantities of the convergence analysis recorded at every step.

``run_path`` trains every model of a batched layer with eta_m = step_factor / L_m (L_m the
smoothness constant at the start, ``lib.hessian.smoothness``) and records, per step and model:
the loss, the squared gradient norm (all trained blocks, and the attention blocks W_Q, W_K alone),
lambda_B(t), sigma_t, ||B(t) - B(0)||_2 and ||a_t - a_0||_F for a = (W_Q, W_K).
``path_bounds`` and ``decrease_ratios`` evaluate the proposition on linear convergence along the
path from such a record.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .batched import BatchedAttentionLayer, train_batched
from .hessian import smoothness
from .theory import batched_b_matrix, batched_gram_extremes, sigma_min_wo
from .validation import check_positive_float, check_positive_int

__all__ = ["run_path", "path_bounds", "decrease_ratios"]


def _attention(model: BatchedAttentionLayer) -> torch.Tensor:
    return torch.cat([model.W_Q.detach().flatten(1), model.W_K.detach().flatten(1)], dim=1)


def run_path(model: BatchedAttentionLayer, X: torch.Tensor, Y: torch.Tensor,
             trainable: Sequence[str], *, steps: int, step_factor: float = 0.5) -> dict:
    """Train ``model`` in place; returns {"loss", "grad_sq", "grad_a_sq", "lambda_b", "sigma", "dB",
    "da": (steps + 1, M) arrays; "lr": (M,); "status": list}."""
    steps = check_positive_int(steps, "steps")
    step_factor = check_positive_float(step_factor, "step_factor")
    lr = (step_factor / smoothness(model, X, Y, tuple(trainable))).cpu().numpy()
    B0, a0 = batched_b_matrix(model, X).detach(), _attention(model)

    def record(state) -> dict:
        with torch.no_grad():
            B = batched_b_matrix(state.model, X)
            return {"lambda_b": batched_gram_extremes(state.model, X)[0],
                    "sigma": sigma_min_wo(state.model),
                    "dB": torch.linalg.matrix_norm(B - B0, 2),
                    "da": (_attention(state.model) - a0).norm(dim=1)}

    hist = train_batched(model, X, Y, steps=steps, lr=lr, trainable=tuple(trainable),
                         callbacks=[record])
    grads = hist.grad_norms
    out = dict(loss=hist.loss, grad_sq=sum(g**2 for g in grads.values()), lr=lr,
               grad_a_sq=sum(grads[k] ** 2 for k in ("W_Q", "W_K") if k in grads),
               status=hist.status)
    out.update({k: hist.diagnostics[k] for k in ("lambda_b", "sigma", "dB", "da")})
    return out


def path_bounds(run: dict, N: int) -> tuple[np.ndarray, np.ndarray]:
    """Statement 1 (product of the factors 1 - eta mu_t) and statement 2 with running minima of
    lambda_B and sigma, as (steps + 1, M) arrays of loss bounds; mu_t = lambda_B(t) sigma_t^2 / N."""
    lam, sig, lr, f0 = run["lambda_b"], run["sigma"], run["lr"], run["loss"][0]
    factors = 1 - lr * lam * sig**2 / N
    product = f0 * np.vstack([np.ones_like(f0), np.cumprod(factors[:-1], axis=0)])
    mu_bar = np.minimum.accumulate(lam, axis=0) * np.minimum.accumulate(sig, axis=0) ** 2 / N
    t = np.arange(lam.shape[0])[:, None]
    running = f0 * (1 - lr * np.vstack([mu_bar[:1], mu_bar[:-1]])) ** t
    return product, running


def decrease_ratios(run: dict) -> np.ndarray:
    """(f_t - f_{t+1}) / (eta/2 ||grad f_t||^2), (steps, M): the decrease condition asks for >= 1."""
    loss = run["loss"]
    return (loss[:-1] - loss[1:]) / (0.5 * run["lr"] * run["grad_sq"][:-1])
