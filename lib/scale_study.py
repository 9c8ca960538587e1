"""The initialization studies of the chapter on training everything: the attention scale
and the embedding dimension, for batched orthogonal initializations on random regression
problems.

* ``grid_model``: one batched layer holding every (scale, seed) pair, scale-major;
* ``init_statistics``: lambda_B, the median attention entropy and the largest entry of
  S over a grid of scales, at initialization;
* ``scale_sweep``: GD on (W_Q, W_K, W_V) from each scale of a grid (step sizes from
  the value block, capped by the reference scale's);
* ``dimension_point``: lambda_B and GD from initializations at one embedding dimension;
* ``plot_scale_study`` / ``plot_dimension_study``: the chapter's figures of these
  studies;
* ``median_attention_entropy``: the median row entropy of a layer's attention;
* ``scale_summary`` / ``scale_report``: what the attention-scale study shows, and its
  printed lines;
* ``dimension_summary`` / ``dimension_report``: what the embedding-dimension sweep shows
  for one kernel, and its printed lines.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from .attention import default_gamma
from .batched import BatchedAttentionLayer, train_batched
from .data import stacked_random_problems
from .stats import wilson_interval
from .theory import batched_gram_extremes

__all__ = [
    "grid_model",
    "init_statistics",
    "scale_sweep",
    "dimension_point",
    "plot_scale_study",
    "plot_dimension_study",
    "gaussian_scale_bound",
    "softmax_saturation_limit",
    "median_attention_entropy",
    "scale_summary",
    "scale_report",
    "dimension_summary",
    "dimension_report",
]

QKV = ("W_Q", "W_K", "W_V")


def grid_model(
    kernel: str,
    scales: Sequence[float],
    seeds: Sequence[int],
    D: int,
    H: int,
    device=None,
) -> BatchedAttentionLayer:
    """Orthogonal initializations, model index = scale index * len(seeds) + seed index;
    model seed
    1000 + seed."""
    return BatchedAttentionLayer(
        len(scales) * len(seeds),
        D,
        H=H,
        kernel=kernel,
        init="orthogonal",
        qk_scale=np.repeat(np.asarray(scales, float), len(seeds)).tolist(),
        seeds=[1000 + s for s in seeds] * len(scales),
        device=device,
    )


@torch.no_grad()
def init_statistics(
    kernel: str,
    scales: Sequence[float],
    seeds: Sequence[int],
    N: int,
    n: int,
    D: int,
    H: int,
    device=None,
) -> dict[str, np.ndarray]:
    """{"lambda_b": (scales, seeds), "entropy": (scales,) median row entropy (Gaussian
    rows
    normalised to sum 1), "s_max": (scales, seeds) largest entry of S}."""
    X, _ = stacked_random_problems(list(seeds) * len(scales), N, n, D, device=device)
    model = grid_model(kernel, scales, seeds, D, H, device)
    lam, _ = batched_gram_extremes(model, X)
    S = model.attention(X)
    if kernel == "gaussian":  # the rows normalised to sum 1, computed stably
        model.set_kernel("gaussian_normalized", model.gamma)
    P = model.attention(X) if kernel == "gaussian" else S
    entropy = -(P * torch.log(P.clamp_min(1e-300))).sum(-1).reshape(len(scales), -1)
    shape = (len(scales), len(seeds))
    return dict(
        lambda_b=lam.reshape(shape).cpu().numpy(),
        entropy=entropy.median(1).values.cpu().numpy(),
        s_max=S.amax(dim=(1, 2, 3, 4)).reshape(shape).cpu().numpy(),
    )


def scale_sweep(
    kernel: str,
    scales: Sequence[float],
    seeds: Sequence[int],
    N: int,
    n: int,
    D: int,
    H: int,
    steps: int,
    ref_scale: float,
    device=None,
) -> dict[str, np.ndarray]:
    """GD on (W_Q, W_K, W_V) from every (scale, seed); eta = 0.5 / L_V (L_V =
    lambda_max(BB^T)/N at the start), capped by the median of that value at
    ``ref_scale``. Returns (scales, seeds) arrays
    {"ratio": f_T / f_0, "failed", "growth_q": ||W_Q(T)|| / ||W_Q(0)||}."""
    X, Y = stacked_random_problems(list(seeds) * len(scales), N, n, D, device=device)
    model = grid_model(kernel, scales, seeds, D, H, device)
    L_V = (batched_gram_extremes(model, X)[1] / N).cpu().numpy()
    reference = grid_model(kernel, [ref_scale], seeds, D, H, device)
    lr_ref = 0.5 / np.median(
        batched_gram_extremes(reference, X[: len(seeds)])[1].cpu().numpy() / N
    )
    q0 = model.W_Q.detach().reshape(model.M, -1).norm(dim=1).cpu().numpy()
    hist = train_batched(
        model, X, Y, steps=steps, lr=np.minimum(0.5 / L_V, lr_ref), trainable=QKV
    )
    q1 = model.W_Q.detach().reshape(model.M, -1).norm(dim=1).cpu().numpy()
    shape = (len(scales), len(seeds))
    return dict(
        ratio=(hist.final_loss / hist.loss[0]).reshape(shape),
        failed=hist.failed.reshape(shape),
        growth_q=(q1 / q0).reshape(shape),
    )


def dimension_point(
    kernel: str,
    D: int,
    seeds: Sequence[int],
    N: int,
    n: int,
    H: int,
    steps: int,
    scale: float,
    device=None,
) -> dict[str, np.ndarray]:
    """lambda_B at ``scale`` and at scale 1, and GD on (W_Q, W_K, W_V) with eta = 0.5 /
    L_V from ``scale``: {"lambda_b", "lambda_max", "lambda_b_unit", "ratio" (f_T/f_0),
    "ratio_half",
    "failed", "increased" (the loss rose at least once)}, each (seeds,)."""
    X, Y = stacked_random_problems(seeds, N, n, D, device=device)
    model = grid_model(kernel, [scale], seeds, D, H, device)
    lam, lmax = batched_gram_extremes(model, X)
    lam_unit = batched_gram_extremes(grid_model(kernel, [1.0], seeds, D, H, device), X)[
        0
    ]
    hist = train_batched(
        model, X, Y, steps=steps, lr=(0.5 * N / lmax).cpu().numpy(), trainable=QKV
    )
    ratio = hist.loss / hist.loss[0]
    return dict(
        lambda_b=lam.cpu().numpy(),
        lambda_max=lmax.cpu().numpy(),
        lambda_b_unit=lam_unit.cpu().numpy(),
        ratio=ratio[-1],
        ratio_half=ratio[steps // 2],
        failed=hist.failed,
        increased=np.nanmax(np.diff(ratio, axis=0), axis=0) > 0,
    )


def plot_scale_study(
    init: dict,
    sweep: dict,
    fine_scales,
    train_scales,
    ref_scale: dict,
    n: int,
    steps: int,
):
    """Three panels over the attention scale: lambda_B, median entropy, f_T / f_0 (per
    kernel)."""
    from .plotting import KERNEL_COLORS, KERNEL_LABELS, new_figure

    fig, axes = new_figure(3, 1, width=3.6, height=3.3)
    for kernel in init:
        color, label = KERNEL_COLORS[kernel], KERNEL_LABELS[kernel]
        lam = np.maximum(init[kernel]["lambda_b"], 1e-30)
        axes[0].plot(fine_scales, np.median(lam, 1), color=color, label=label)
        axes[0].fill_between(
            fine_scales,
            np.percentile(lam, 25, 1),
            np.percentile(lam, 75, 1),
            color=color,
            alpha=0.2,
            lw=0,
        )
        axes[1].plot(fine_scales, init[kernel]["entropy"], color=color, label=label)
        ratio = sweep[kernel]["ratio"]
        axes[2].plot(
            train_scales,
            np.median(ratio, 1),
            color=color,
            marker="o",
            ms=3,
            label=label,
        )
        axes[2].fill_between(
            train_scales, ratio.min(1), ratio.max(1), color=color, alpha=0.2, lw=0
        )
        for ax in axes:
            ax.axvline(ref_scale[kernel], color=color, lw=0.8, ls=":")
    axes[0].set_ylim(1e-12, 10)
    axes[0].set_yscale("log")
    axes[0].set_ylabel(r"$\lambda_B$ at initialization")
    axes[0].set_title("median, 25-75% band", fontsize=9)
    axes[1].axhline(math.log(n), color="grey", lw=0.8, ls="--")
    axes[1].set_ylabel("median attention entropy (nats)")
    axes[1].text(
        fine_scales[0], math.log(n) - 0.12, r"$\log n$", fontsize=8, color="grey"
    )
    axes[2].set_yscale("log")
    axes[2].set_ylabel(f"$f_T / f_0$ after T = {steps} GD steps")
    axes[2].set_title("median, min-max band", fontsize=9)
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("attention scale s (qk_scale)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_dimension_study(
    sweep: dict, dims: Sequence[int], seeds: int, steps: int, threshold: int, tol: float
):
    """Three panels over D: fraction converged (Wilson intervals; dashed: half the
    budget), lambda_B at initialization, f_T / f_0. sweep: {(kernel, D):
    dimension_point(...)}.
    """
    from .plotting import KERNEL_COLORS, KERNEL_LABELS, new_figure

    fig, axes = new_figure(3, 1, width=3.7, height=3.4)
    d = np.array(dims)
    for kernel in sorted({k for k, _ in sweep}, key=["softmax", "gaussian"].index):
        color, label = KERNEL_COLORS[kernel], KERNEL_LABELS[kernel]
        conv = np.array([int((sweep[kernel, D]["ratio"] <= tol).sum()) for D in dims])
        half = np.array(
            [int((sweep[kernel, D]["ratio_half"] <= tol).sum()) for D in dims]
        )
        ci = np.array([wilson_interval(k, seeds) for k in conv])
        axes[0].errorbar(
            d,
            conv / seeds,
            yerr=[conv / seeds - ci[:, 0], ci[:, 1] - conv / seeds],
            color=color,
            marker="o",
            ms=4,
            capsize=2,
            label=f"{label}, T = {steps}",
        )
        axes[0].plot(
            d,
            half / seeds,
            color=color,
            ls="--",
            lw=1,
            label=f"{label}, T = {steps // 2}",
        )
        lam = np.maximum(
            np.array([sweep[kernel, D]["lambda_b"] for D in dims]), 1.2e-12
        )
        scale = "1" if kernel == "softmax" else "$D^{-1/4}$"
        axes[1].plot(
            d,
            np.median(lam, 1),
            color=color,
            marker="o",
            ms=3,
            label=f"{label}, scale {scale}",
        )
        axes[1].fill_between(
            d,
            np.percentile(lam, 25, 1),
            np.percentile(lam, 75, 1),
            color=color,
            alpha=0.2,
            lw=0,
        )
        if kernel == "gaussian":
            unit = np.maximum(
                np.array([sweep[kernel, D]["lambda_b_unit"] for D in dims]), 1.2e-12
            )
            axes[1].plot(
                d,
                np.median(unit, 1),
                color=color,
                ls=":",
                marker="x",
                ms=3,
                label=f"{label}, scale 1",
            )
        ratio = np.array([sweep[kernel, D]["ratio"] for D in dims])
        axes[2].plot(d, np.median(ratio, 1), color=color, marker="o", ms=3, label=label)
        axes[2].fill_between(
            d,
            np.percentile(ratio, 25, 1),
            np.percentile(ratio, 75, 1),
            color=color,
            alpha=0.2,
            lw=0,
        )
    for ax in axes:
        ax.axvline(
            threshold,
            color="grey",
            lw=1,
            ls="--",
            label=f"D = Nn/H = {threshold}" if ax is axes[0] else None,
        )
        ax.set_xlabel("embedding dimension D")
    axes[0].set_ylim(-0.03, 1.03)
    axes[0].set_ylabel(r"fraction with $f_T \leq 10^{-6} f_0$")
    axes[0].set_title(f"{seeds} seeds, 95% Wilson intervals", fontsize=9)
    axes[1].set_yscale("log")
    axes[1].set_ylim(1e-12, 1)
    axes[1].set_ylabel(r"$\lambda_B$ at initialization")
    axes[1].set_title("median, 25-75% band (0 shown at bottom)", fontsize=9)
    axes[2].set_yscale("log")
    axes[2].set_ylabel(f"$f_T / f_0$, T = {steps}")
    axes[2].set_title("median, 25-75% band", fontsize=9)
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


@torch.no_grad()
def gaussian_scale_bound(
    scales: Sequence[float],
    seeds: Sequence[int],
    N: int,
    n: int,
    D: int,
    H: int,
    device=None,
) -> dict[float, tuple[np.ndarray, np.ndarray]]:
    """For the Gaussian kernel at each scale s: (lambda_B, bound) per seed, with the
    bound
    H n / N exp(-2 gamma m s^2) sum_i ||X_i||^2 of the proposition on large scales
    (m: the smallest squared query-key distance at s = 1)."""
    X, _ = stacked_random_problems(seeds, N, n, D, device=device)
    unit = grid_model("gaussian", [1.0], seeds, D, H, device)
    Q = torch.einsum("mbnD,mhDd->mbhnd", X, unit.W_Q)
    K = torch.einsum("mbnD,mhDd->mbhnd", X, unit.W_K)
    m_min = ((Q.unsqueeze(-2) - K.unsqueeze(-3)) ** 2).sum(-1).amin(dim=(1, 2, 3, 4))
    mass = (X**2).sum(dim=(1, 2, 3))
    out = {}
    for s in scales:
        model = grid_model("gaussian", [s], seeds, D, H, device)
        lam = batched_gram_extremes(model, X)[0]
        gamma = default_gamma(D) if model.gamma is None else model.gamma
        bound = H * n / N * torch.exp(-2 * gamma * m_min * s**2) * mass
        out[s] = (lam.cpu().numpy(), bound.cpu().numpy())
    return out


@torch.no_grad()
def softmax_saturation_limit(
    seeds: Sequence[int], N: int, n: int, D: int, H: int, s_big: float, device=None
) -> dict[str, np.ndarray]:
    """The Softmax limit s -> infinity at each seed: "collide" (two queries of a sample
    select the same key in every head), "lambda_inf" and "lambda_max_inf" of the limit
    B_inf (one-hot rows), "gap" (smallest logit gap at s = 1) and "lambda_big"
    (lambda_B at s = s_big)."""
    X, _ = stacked_random_problems(seeds, N, n, D, device=device)
    unit = grid_model("softmax", [1.0], seeds, D, H, device)
    Q = torch.einsum("mbnD,mhDd->mbhnd", X, unit.W_Q)
    K = torch.einsum("mbnD,mhDd->mbhnd", X, unit.W_K)
    logits = Q @ K.transpose(-1, -2) / math.sqrt(D)
    top2 = logits.topk(2, dim=-1).values
    choice = logits.argmax(-1)  # (M, N, H, n): the key each query selects
    SX = torch.nn.functional.one_hot(choice, n).to(X.dtype) @ X.unsqueeze(2)
    B_inf = SX.permute(0, 1, 3, 2, 4).reshape(len(seeds), N * n, H * D)
    eig = torch.linalg.eigvalsh(B_inf @ B_inf.transpose(1, 2))
    rows = choice.permute(0, 1, 3, 2)  # (M, N, n, H)
    collide = torch.zeros(len(seeds), dtype=torch.bool, device=X.device)
    for k in range(n):
        for k2 in range(k + 1, n):
            collide |= (rows[:, :, k] == rows[:, :, k2]).all(-1).any(-1)
    big = batched_gram_extremes(grid_model("softmax", [s_big], seeds, D, H, device), X)[
        0
    ]
    return {
        "collide": collide.cpu().numpy(),
        "lambda_inf": eig[:, 0].clamp_min(0).cpu().numpy(),
        "lambda_max_inf": eig[:, -1].cpu().numpy(),
        "lambda_big": big.cpu().numpy(),
        "gap": (top2[..., 0] - top2[..., 1]).amin(dim=(1, 2, 3)).cpu().numpy(),
    }


# ------------------------------------------------------------ summaries of the studies
@torch.no_grad()
def median_attention_entropy(model: BatchedAttentionLayer, X: torch.Tensor) -> float:
    """The median over all rows (models, samples, heads) of the entropy -sum_j p_j log
    p_j of the attention rows, in nats; Gaussian rows are normalised to sum 1 first
    (the model's kernel is restored afterwards). X: (N, n, D) or (M, N, n, D)."""
    if not isinstance(model, BatchedAttentionLayer):
        raise TypeError("model must be a lib.batched.BatchedAttentionLayer, got "
                        f"{type(model).__name__}")
    kernel, gamma = model.kernel, model.gamma
    if kernel == "gaussian":
        model.set_kernel("gaussian_normalized", gamma)  # the same rows, summing to 1
    try:
        P = model.attention(X)
    finally:
        model.set_kernel(kernel, gamma)
    return (-(P * torch.log(P.clamp_min(1e-300))).sum(-1)).median().item()


def scale_summary(init: dict, sweep: dict, fine_scales: Sequence[float],
                  train_scales: Sequence[float],
                  at: Sequence[float] = (0.125, 0.5, 1.0, 4.0, 8.0)) -> dict:
    """The attention-scale study, init: {kernel: ``init_statistics``} on
    ``fine_scales``, sweep: {kernel: ``scale_sweep``} on ``train_scales`` (both
    kernels): {"peak": {kernel: the scale of the largest median lambda_B},
    "entropy_gap": the largest difference of the median entropies of the two kernels,
    "median_ratio": {kernel: {s: median f_T / f_0 at the train scale nearest s}} for s
    in ``at``, "gaussian_stuck": the smallest Gaussian f_T / f_0 at scales >= 4,
    "gaussian_s_max": the largest Gaussian entry of S at fine scales >= 4, "growth":
    {kernel: the smallest ||W_Q(T)|| / ||W_Q(0)|| at the scale nearest 1/8}}."""
    if set(init) != {"softmax", "gaussian"} or set(sweep) != {"softmax", "gaussian"}:
        raise ValueError("init and sweep must hold both kernels, 'softmax' and "
                         f"'gaussian', got {sorted(init)} and {sorted(sweep)}")
    fine, train = np.asarray(fine_scales), np.asarray(train_scales)
    index = {s: int(np.argmin(np.abs(train - s))) for s in (*at, 0.125, 4.0)}
    med = {k: np.median(sweep[k]["ratio"], 1) for k in sweep}
    return dict(
        peak={k: float(fine[np.argmax(np.median(init[k]["lambda_b"], 1))])
              for k in init},
        entropy_gap=float(np.max(np.abs(init["softmax"]["entropy"]
                                        - init["gaussian"]["entropy"]))),
        median_ratio={k: {s: float(med[k][index[s]]) for s in at} for k in sweep},
        gaussian_stuck=float(sweep["gaussian"]["ratio"][index[4.0]:].min()),
        gaussian_s_max=float(init["gaussian"]["s_max"][fine >= 4].max()),
        growth={k: float(sweep[k]["growth_q"][index[0.125]].min()) for k in sweep},
    )


def scale_report(summary: dict) -> str:
    """Six lines on a ``scale_summary`` (it must hold the scales 1/8, 1/2, 1 and 8)."""
    peak, med, growth = summary["peak"], summary["median_ratio"], summary["growth"]
    soft, gauss = med["softmax"], med["gaussian"]
    return "\n".join([
        f"scale of the largest median lambda_B: Softmax {peak['softmax']:.2f} (in [1,"
        f" 2]), Gaussian {peak['gaussian']:.2f} (in [0.35, 0.71])",
        "largest entropy difference between the kernels:"
        f" {summary['entropy_gap']:.2f} nats (<= 0.2)",
        f"median f_T/f_0, Softmax: s=1/8 {soft[0.125]:.1e}, s=1 {soft[1.0]:.1e}, s=8"
        f" {soft[8.0]:.1e} (s=8 at least 100 x s=1; s=1/8 <= 1e-2)",
        f"median f_T/f_0, Gaussian: s=1/8 {gauss[0.125]:.1e}, s=0.5 {gauss[0.5]:.1e};"
        f" smallest f_T/f_0 at s >= 4: {summary['gaussian_stuck']:.3f} (>= 0.9: no"
        " progress)",
        "Gaussian, s >= 4: largest entry of S over all seeds"
        f" {summary['gaussian_s_max']:.1e} (<= 1e-3)",
        f"s = 1/8: ||W_Q(T)|| / ||W_Q(0)|| at least {growth['softmax']:.1f} (Softmax),"
        f" {growth['gaussian']:.1f} (Gaussian) (>= 2)",
    ])


def dimension_summary(sweep: dict, kernel: str, dims: Sequence[int], threshold: int,
                      tol: float) -> dict:
    """The embedding-dimension sweep of one kernel, sweep: {(kernel, D):
    ``dimension_point``}: {"converged": {D: fraction with f_T / f_0 <= tol},
    "median_ratio": {D: median f_T / f_0}, "rank_zero": lambda_B <= 1e-12 lambda_max
    for every seed with D < threshold, "positive": lambda_B > 1e-13 lambda_max for
    every seed with D > threshold, "median_lambda_b": {D: median lambda_B} for D >=
    threshold}."""
    missing = [D for D in dims if (kernel, D) not in sweep]
    if missing:
        raise ValueError(f"sweep has no point for kernel {kernel!r} at D = {missing}")
    point = {D: sweep[kernel, D] for D in dims}
    lam, top = ({D: point[D][k] for D in dims} for k in ("lambda_b", "lambda_max"))
    return dict(
        converged={D: float(np.mean(point[D]["ratio"] <= tol)) for D in dims},
        median_ratio={D: float(np.median(point[D]["ratio"])) for D in dims},
        rank_zero=all(bool(np.all(lam[D] <= 1e-12 * top[D]))
                      for D in dims if D < threshold),
        positive=all(bool(np.all(lam[D] > 1e-13 * top[D]))
                     for D in dims if D > threshold),
        median_lambda_b={D: float(np.median(point[D]["lambda_b"]))
                         for D in dims if D >= threshold},
    )


def dimension_report(summary: dict, label: str, steps: int, threshold: int) -> str:
    """Four lines on a ``dimension_summary``: the fractions converged within ``steps``
    and the median f_T / f_0 per D, the two rank statements, and the median lambda_B
    at the threshold and at the largest D. ``label`` starts the first line."""
    if threshold not in summary["median_lambda_b"]:
        raise ValueError(f"threshold {threshold} is not among the summary's dimensions")
    conv, ratio, lam = (summary[k] for k in ("converged", "median_ratio",
                                              "median_lambda_b"))
    pad, top = " " * 9, max(conv)
    return "\n".join([
        f"{label} converged within {steps} steps: "
        + ", ".join(f"D={D}: {v:.2f}" for D, v in conv.items()),
        f"{pad}median f_T/f_0: "
        + ", ".join(f"D={D}: {v:.0e}" for D, v in ratio.items()),
        f"{pad}lambda_B = 0 (<= 1e-12 lambda_max) for every seed with D < {threshold}:"
        f" {summary['rank_zero']}; > 1e-13 lambda_max for every seed with D >"
        f" {threshold}: {summary['positive']}",
        f"{pad}median lambda_B at D = {threshold}: {lam[threshold]:.1e}, at D = {top}:"
        f" {lam[top]:.1e} (>= 10 x)",
    ])
