"""Repeated tokens, the experiment of the chapter on training everything: one sample
contains the same token twice, so two rows of every attention matrix, of B and of the
prediction are equal whatever the weights.

* ``repeated_token_problem``: copy one token of a sample onto another; the original
  targets (which differ on the two copies), targets made to agree on them, and the loss
  floor f_rep = ||y_source - y_target||^2 / (4N) of the differing targets;
* ``train_both_targets``: GD on the chosen weights from one initialization on both
  targets (eta = step_factor / L(theta_0));
* ``plot_repeated_tokens``: the chapter's figure of these runs.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch

from .batched import BatchedAttentionLayer, train_batched
from .hessian import smoothness
from .validation import check_int, check_positive_float, check_positive_int

__all__ = ["RepeatedTokens", "repeated_token_problem", "train_both_targets",
           "plot_repeated_tokens"]

ALL = ("W_Q", "W_K", "W_V", "W_O")


class RepeatedTokens(NamedTuple):
    """X: (N, n, D) with a repeated token; Y_differ, Y_agree: (N, n, d_out); f_rep: the
    smallest loss any weights reach on Y_differ."""

    X: torch.Tensor
    Y_differ: torch.Tensor
    Y_agree: torch.Tensor
    f_rep: float


def repeated_token_problem(X: torch.Tensor, Y: torch.Tensor, sample: int = 0,
                           source: int = 0, target: int = 1) -> RepeatedTokens:
    """Token ``target`` of sample ``sample`` := token ``source`` (X is not modified).
    X: (N, n, D), Y: (N, n, d_out); Y itself is Y_differ, Y_agree copies the source
    row of Y onto the target row."""
    if X.dim() != 3 or Y.dim() != 3 or X.shape[:2] != Y.shape[:2]:
        raise ValueError("X and Y must be (N, n, D) and (N, n, d_out), got shapes "
                         f"{tuple(X.shape)} and {tuple(Y.shape)}")
    N, n = X.shape[:2]
    sample = check_int(sample, "sample", 0, N - 1)
    source, target = (check_int(v, name, 0, n - 1)
                      for v, name in ((source, "source"), (target, "target")))
    if source == target:
        raise ValueError(f"source and target must be different tokens, got {source}")
    X_rep, Y_agree = X.clone(), Y.clone()
    X_rep[sample, target] = X_rep[sample, source]
    Y_agree[sample, target] = Y_agree[sample, source]
    f_rep = (((Y[sample, source] - Y[sample, target]) ** 2).sum() / (4 * N)).item()
    return RepeatedTokens(X_rep, Y, Y_agree, f_rep)


def train_both_targets(problem: RepeatedTokens, kernel: str, H: int, qk_scale: float,
                       steps: int, *, seed: int = 5, step_factor: float = 0.5,
                       trainable: Sequence[str] = ALL, device=None) -> np.ndarray:
    """Two copies of one orthogonal initialization (model seed ``seed``), trained on
    Y_differ (model 0) and Y_agree (model 1) with eta_m = step_factor / L_m, L_m the
    smoothness constant at the start (``lib.hessian.smoothness``). Returns the losses,
    (steps + 1, 2)."""
    steps = check_positive_int(steps, "steps")
    step_factor = check_positive_float(step_factor, "step_factor")
    X = problem.X.expand(2, -1, -1, -1).contiguous()
    Y = torch.stack([problem.Y_differ, problem.Y_agree])
    model = BatchedAttentionLayer(2, X.shape[-1], H=H, kernel=kernel, init="orthogonal",
                                  qk_scale=qk_scale, seeds=[seed, seed], device=device)
    lr = (step_factor / smoothness(model, X, Y, tuple(trainable))).cpu().numpy()
    return train_batched(model, X, Y, steps=steps, lr=lr, trainable=trainable).loss


def plot_repeated_tokens(runs: dict[str, np.ndarray], f_rep: float):
    """{kernel: ``train_both_targets`` losses}: the loss per step for both targets,
    with the floor f_rep. Returns the figure."""
    from .plotting import KERNEL_COLORS, KERNEL_LABELS, new_figure

    fig, ax = new_figure(width=5.6, height=3.6)
    for kernel, loss in runs.items():
        ax.plot(loss[:, 0], color=KERNEL_COLORS[kernel],
                label=f"{KERNEL_LABELS[kernel]}: targets differ on the repeated tokens")
        ax.plot(loss[:, 1], color=KERNEL_COLORS[kernel], ls="--",
                label=f"{KERNEL_LABELS[kernel]}: targets agree")
    ax.axhline(f_rep, color="black", lw=1, ls=":")
    ax.text(0, f_rep * 0.7, r"$f_{\mathrm{rep}}$", ha="left", va="top", fontsize=9)
    ax.set(yscale="log", xlabel="GD step t", ylabel=r"loss $f(\theta_t)$")
    ax.legend(fontsize=7)
    return fig
