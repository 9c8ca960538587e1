"""The W_V-only experiments of the chapter on wide embeddings: GD on the values with the
attention and W_O fixed, one record per problem, and the chapter's figures of them.

* ``gram_sandwich``: the Gram lemma on one layer (J J^T against its Kronecker formula,
  both sides of the sandwich, the wrong Kronecker order);
* ``slowest_point``: the value weights where the PL inequality is an equality;
* ``experiment_layer``: the layer of one seed (model seed 1000 + seed);
* ``mu_over_L``: mu / L of the W_V-only problem for every (problem, seed) pair;
* ``contraction_records``: experiment (a), the per-step contraction against the bound
  rho = 1 - mu/L (eta = 1/L), and ``plot_contraction``;
* ``exact_loss_curves``: one run from the closed form (``lib.theory.ValueModes``) with
  the theorem's bound and the exact worst case, and ``plot_loss_bounds``;
* ``transition_records``: experiment (b), the phase transition at H D = N n (f*,
  lambda_B, the loss after fixed budgets, the steps needed and guaranteed), with
  ``by_ratio``, ``threshold_report``, ``fstar_count_z``, ``plot_transition`` and
  ``plot_steps``.

Every record uses orthogonal initialisations unless stated, float64, and eta = 1/L.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch

from .data import RegressionProblem as Problem, random_problem
from .model import AttentionLayer
from .stats import median_range_by
from .theory import (ValueModes, b_matrix, lambda_b, optimal_values,
                     predicted_rate, values_jacobian)
from .trainer import train
from .validation import check_positive_int

__all__ = [
    "gram_sandwich",
    "slowest_point",
    "experiment_layer",
    "mu_over_L",
    "contraction_records",
    "exact_loss_curves",
    "transition_records",
    "by_ratio",
    "threshold_report",
    "fstar_count_z",
    "plot_contraction",
    "plot_loss_bounds",
    "plot_transition",
    "plot_steps",
]


@torch.no_grad()
def gram_sandwich(model: AttentionLayer, X: torch.Tensor) -> dict[str, float]:
    """The Gram lemma for one layer (d_out <= d_v), X: (N, n, D). With J =
    ``values_jacobian`` (N n d_out, H D d_v), B = ``b_matrix`` (N n, H D), the blocks
    W_O^h (d_v, d_out), s_min = min_h sigma_{d_out}(W_O^h), s_max = max_h ||W_O^h||_2
    and K = B B^T x I (row-major Kronecker order), returns {"gram_err": max |J J^T -
    sum_h B_h B_h^T x W_O^h^T W_O^h|, "low": lambda_min(J J^T - s_min^2 K), "high":
    lambda_min(s_max^2 K - J J^T), "wrong": lambda_min(J J^T - s_min^2 I x B B^T),
    "s_min", "s_max"}. The lemma says low, high >= 0 (up to rounding); wrong is
    negative in general."""
    if model.d_out > model.d_v:
        raise ValueError(f"need d_out <= d_v, got d_out={model.d_out}, d_v={model.d_v}")
    J, B = values_jacobian(model, X), b_matrix(model, X)
    H, D, d_v, d_out = model.H, model.D, model.d_v, model.d_out
    O_blocks = model.W_O.detach().reshape(H, d_v, d_out).unbind(0)
    JJt = J @ J.T
    gram = sum(torch.kron(Bh @ Bh.T, Oh.T @ Oh)
               for Bh, Oh in zip(B.reshape(B.shape[0], H, D).unbind(1), O_blocks))
    s = torch.stack([torch.linalg.svdvals(Oh) for Oh in O_blocks])
    eye = torch.eye(d_out, dtype=B.dtype, device=B.device)
    BBt, s_min, s_max = torch.kron(B @ B.T, eye), s[:, -1].min(), s[:, 0].max()
    smallest = lambda M: torch.linalg.eigvalsh(M)[0].item()  # noqa: E731
    return dict(gram_err=(JJt - gram).abs().max().item(),
                low=smallest(JJt - s_min**2 * BBt), high=smallest(s_max**2 * BBt - JJt),
                wrong=smallest(JJt - s_min**2 * torch.kron(eye, B @ B.T)),
                s_min=s_min.item(), s_max=s_max.item())


@torch.no_grad()
def slowest_point(model: AttentionLayer, X: torch.Tensor, W_V_star: torch.Tensor,
                  mu: float, rank_tol: float = 1e-10) -> torch.Tensor:
    """W_V* + v / sqrt(mu): (H, D, d_v), with v the right singular vector of J =
    ``values_jacobian`` for its smallest non-zero singular value (> rank_tol times the
    largest), so that f - f* = 1/2 there when mu is that value squared over N; the
    PL inequality of the W_V-only problem is an equality at this point."""
    if not mu > 0:
        raise ValueError(f"mu must be positive, got {mu!r}")
    _, sv, Vh = torch.linalg.svd(values_jacobian(model, X), full_matrices=False)
    v = Vh[int((sv > rank_tol * sv[0]).sum()) - 1].reshape(W_V_star.shape)
    return W_V_star + v / math.sqrt(mu)


def experiment_layer(kernel: str, seed: int, D: int, H: int, *,
                     init: str = "orthogonal", gamma: float | None = None,
                     device=None) -> AttentionLayer:
    """``AttentionLayer(D, H=H, kernel, init, gamma)`` with model seed 1000 + seed
    (d_v = d_out = D)."""
    return AttentionLayer(D, H=H, kernel=kernel, init=init, gamma=gamma,
                          seed=1000 + seed, device=device)


def mu_over_L(kernel: str, problems: Sequence[Problem], seeds: Sequence[int], D: int,
              H: int, *, init: str = "orthogonal", gamma: float | None = None,
              device=None) -> np.ndarray:
    """mu / L (``lib.theory.predicted_rate``) of the layer of each seed on its problem:
    (len(seeds),). problems[i].X: (N, n, D)."""
    if len(problems) < len(seeds):
        raise ValueError(f"need a problem per seed: {len(problems)} problems for "
                         f"{len(seeds)} seeds")
    values = []
    for seed, prob in zip(seeds, problems):
        model = experiment_layer(kernel, seed, D, H, init=init, gamma=gamma,
                                 device=device)
        bound = predicted_rate(model, prob.X, 1.0)
        values.append(bound.mu / bound.L)
    return np.array(values)


def contraction_records(kernel: str, problems: Sequence[Problem],
                        seeds: Sequence[int], D: int, H: int, steps: int, *,
                        gamma: float | None = None, device=None) -> list[dict]:
    """Experiment (a): ``steps`` steps of GD on W_V (eta = 1/L) per seed (Gaussian
    bandwidth ``gamma``, default the kernel's). One dict per seed: seed; rate (the
    theorem's rho); mu_over_L; f_star (of the zero modes); full_rank; observed (the
    worst per-step factor of the run); all_steps (the worst factor over all steps,
    ``ValueModes.worst_factor``)."""
    steps = check_positive_int(steps, "steps")
    if len(problems) < len(seeds):
        raise ValueError(f"need a problem per seed: {len(problems)} problems for "
                         f"{len(seeds)} seeds")
    rows = []
    for seed, prob in zip(seeds, problems):
        model = experiment_layer(kernel, seed, D, H, gamma=gamma, device=device)
        modes = ValueModes(model, prob.X, prob.Y)
        bound = predicted_rate(model, prob.X, 1.0 / modes.L)
        hist = train(model, prob.X, prob.Y, steps=steps, lr=bound.lr,
                     trainable=("W_V",))
        rows.append(dict(
            seed=seed, rate=bound.rate, mu_over_L=bound.mu / bound.L,
            f_star=modes.f_star, full_rank=bound.full_rank,
            observed=max(hist.contraction_factors(modes.f_star)),
            all_steps=modes.worst_factor(bound.lr)))
    return rows


def exact_loss_curves(kernel: str, prob: Problem, seed: int, D: int, H: int,
                      steps: int, *, points: int = 400, device=None) -> dict:
    """One seed over the horizon where (1 - mu/L)^(2t) reaches 1e-16: {"seed", "t"
    (<= points,) steps, "loss" f(t) from the closed form, "trainer" the first
    ``steps`` + 1 losses of ``lib.trainer.train``, "f0", "bound" f(0) rho^t,
    "quadratic" f(0) (1 - mu/L)^(2t), "mu_over_L", "horizon"}; eta = 1/L."""
    steps = check_positive_int(steps, "steps")
    model = experiment_layer(kernel, seed, D, H, device=device)
    modes = ValueModes(model, prob.X, prob.Y)
    bound = predicted_rate(model, prob.X, 1.0 / modes.L)
    hist = train(model, prob.X, prob.Y, steps=steps, lr=bound.lr, trainable=("W_V",))
    q = (1 - modes.mu / modes.L) ** 2
    horizon = int(math.log(1e-16) / math.log(q))
    t = np.unique(np.linspace(0, horizon, points).astype(int))
    f0 = hist.loss[0]
    return dict(seed=seed, t=t, loss=modes.loss(bound.lr, t), trainer=hist.loss, f0=f0,
                bound=f0 * bound.rate ** t, quadratic=f0 * q ** t,
                mu_over_L=modes.mu / modes.L, horizon=horizon)


def transition_records(kernel: str, N_list: Sequence[int], seeds: Sequence[int],
                       n: int, D: int, H: int, budgets: Sequence[int], *,
                       check_steps: int = 30, device=None) -> list[dict]:
    """Experiment (b): one dict per (N, seed), problem ``random_problem(N, n, D,
    seed)``, eta = 1/L: kernel, N, seed, ratio H D / (N n), f0, f_star (from
    ``optimal_values``), f_star_modes (the zero modes of ``ValueModes``), full_rank,
    lambda_B, lambda_plus (smallest non-zero eigenvalue of B B^T), final {T: f(T)} for
    T in budgets (closed form), steps (needed for f - f* <= max(1e-3 f*, 1e-10 f0)),
    rate (rho), steps_bound (guaranteed by the theorem), trainer_err (max relative
    |trainer - closed form| over ``check_steps`` steps of ``lib.trainer.train``)."""
    check_steps = check_positive_int(check_steps, "check_steps")
    rows = []
    for N in N_list:
        for seed in seeds:
            prob = random_problem(N, n, D, seed=seed, device=device)
            model = experiment_layer(kernel, seed, D, H, device=device)
            modes = ValueModes(model, prob.X, prob.Y)
            bound = predicted_rate(model, prob.X, 1.0 / modes.L)
            opt, f0 = optimal_values(model, prob.X, prob.Y), modes.loss(bound.lr, 0)
            hist = train(model, prob.X, prob.Y, steps=check_steps, lr=bound.lr,
                         trainable=("W_V",))
            closed = modes.loss(bound.lr, np.arange(len(hist.loss)))
            B = b_matrix(model, prob.X)
            eig_B = torch.linalg.eigvalsh(B @ B.T)
            tol = max(1e-3 * opt.loss, 1e-10 * f0)
            rows.append(dict(
                kernel=kernel, N=N, seed=seed, ratio=H * D / (N * n), f0=f0,
                f_star=opt.loss, f_star_modes=modes.f_star, full_rank=bound.full_rank,
                lambda_B=lambda_b(model, prob.X),
                lambda_plus=eig_B[eig_B > 1e-10 * eig_B[-1]][0].item(),
                final={T: modes.loss(bound.lr, T) for T in budgets},
                steps=modes.steps_to(bound.lr, tol), rate=bound.rate,
                steps_bound=math.ceil(math.log(tol / (f0 - modes.f_star))
                                      / math.log(bound.rate)),
                trainer_err=float(np.max(np.abs(np.array(hist.loss) / closed - 1)))))
    return rows


def by_ratio(rows: Sequence[dict], key: Callable[[dict], float]):
    """(ratios, median, min, max) of key(row) per width ratio (``median_range_by``)."""
    return median_range_by([r["ratio"] for r in rows], [key(r) for r in rows])


def threshold_report(results: Sequence[dict], T: int,
                     kernels: Sequence[str] = ("softmax", "gaussian")) -> str:
    """Experiment (b), rows of ``transition_records``: per side of the threshold and
    kernel, how many problems converge within T steps (steps <= T); per kernel, the
    median f(T) and f* at the two ratios closest to 1. T must be one of the budgets."""
    from .plotting import KERNEL_LABELS

    if not results or T not in results[0]["final"]:
        raise ValueError(f"T must be one of the recorded budgets, got {T!r}")
    exponent, lines = f"1e{round(math.log10(T))}", []
    sides = [("ratio > 1", [r for r in results if r["ratio"] > 1]),
             ("ratio < 1", [r for r in results if r["ratio"] < 1])]
    for name, group in sides:
        for kernel in kernels:
            done = [r["steps"] <= T for r in group if r["kernel"] == kernel]
            lines.append(f"T = {exponent}, {name}, {KERNEL_LABELS[kernel]:8s}: "
                         f"converged in {sum(done)}/{len(done)} problems")
    ratios = sorted({r["ratio"] for r in results})
    near = [min(x for x in ratios if x > 1), max(x for x in ratios if x < 1)]
    for kernel in kernels:
        rows = {x: [r for r in results if r["kernel"] == kernel and r["ratio"] == x]
                for x in near}
        parts = [f"ratio {x:.2f}: median f({exponent}) = "
                 f"{np.median([r['final'][T] for r in rows[x]]):.2g} (f* median "
                 f"{np.median([r['f_star'] for r in rows[x]]):.1g})" for x in near]
        lines.append(f"{KERNEL_LABELS[kernel]:8s} closest to the threshold: "
                     + ";  ".join(parts))
    return "\n".join(lines)


def fstar_count_z(results: Sequence[dict], n: int, D: int, H: int) -> float:
    """Below the threshold (N n > H D, d_out = D), 2 N f* is chi-square with (N n - H D)
    D degrees of freedom: E f* = dof / (2N), sd f* = sqrt(2 dof) / (2N). Returns the
    largest |mean f* - E f*| / (sd / sqrt(count)) over the N of the rows of
    ``transition_records`` with ratio < 1 (the mean over their seeds and kernels)."""
    below = [r for r in results if r["ratio"] < 1]
    if not below:
        raise ValueError("results must contain rows below the threshold (ratio < 1)")
    worst = 0.0
    for N in sorted({r["N"] for r in below}):
        group = [r["f_star"] for r in below if r["N"] == N]
        dof = (N * n - H * D) * D
        mean, sd = dof / (2 * N), math.sqrt(2 * dof) / (2 * N)
        worst = max(worst, abs(np.mean(group) - mean) / (sd / math.sqrt(len(group))))
    return float(worst)


def plot_contraction(results: dict[str, list[dict]], steps: int):
    """Experiment (a), {kernel: ``contraction_records``}: one minus the worst factor
    (of the run, and over all steps) against mu/L, with the bound's diagonal and
    1 - (1 - mu/L)^2. Returns the figure."""
    from .plotting import KERNEL_COLORS, KERNEL_LABELS, new_figure

    fig, ax = new_figure(width=5.6, height=4.4)
    for kernel, rows in results.items():
        color, label = KERNEL_COLORS[kernel], KERNEL_LABELS[kernel]
        x = np.array([r["mu_over_L"] for r in rows])
        ax.scatter(x, 1 - np.array([r["observed"] for r in rows]), color=color, s=18,
                   label=f"{label}: worst of the first {steps} steps")
        ax.scatter(x, 1 - np.array([r["all_steps"] for r in rows]), facecolors="none",
                   edgecolors=color, marker="s", s=22,
                   label=f"{label}: worst step, all $t$ (exact)")
    all_x = np.array([r["mu_over_L"] for rows in results.values() for r in rows])
    grid = np.logspace(np.log10(all_x.min()) - 0.3, np.log10(all_x.max()) + 0.3, 50)
    ax.plot(grid, grid, color="black", lw=1, label=r"bound: $1-\rho = \mu/L$")
    ax.plot(grid, 2 * grid - grid**2, color="black", lw=1, ls="--",
            label=r"$1-(1-\mu/L)^2$")
    ax.set(xscale="log", yscale="log",
           xlabel=r"predicted decrease per step $1-\rho = \mu/L$",
           ylabel=r"observed decrease per step $1-q_t$ (worst step)")
    ax.legend(fontsize=7.5, loc="lower right")
    return fig


def plot_loss_bounds(curves: dict[str, dict], steps: int):
    """One panel per kernel of {kernel: ``exact_loss_curves``}: the exact loss, the
    trainer's first ``steps`` steps, the bound f(0) rho^t and f(0) (1 - mu/L)^(2t).
    Returns the figure."""
    from .plotting import KERNEL_COLORS, KERNEL_LABELS, new_figure

    fig, axes = new_figure(ncols=len(curves), width=4.3, height=3.4, squeeze=False)
    for ax, (kernel, c) in zip(axes[0], curves.items()):
        ax.plot(c["t"], c["loss"], color=KERNEL_COLORS[kernel], lw=1.8,
                label="GD loss (exact solution)")
        ax.plot(c["trainer"], color="black", lw=3, alpha=0.6,
                label=f"trainer, first {steps} steps")
        ax.plot(c["t"], c["bound"], color="black", lw=1, label=r"bound $f(0)\rho^t$")
        ax.plot(c["t"], c["quadratic"], color="black", lw=1, ls="--",
                label=r"$f(0)(1-\mu/L)^{2t}$")
        ax.set(yscale="log", ylim=(1e-15 * c["f0"], 3 * c["f0"]),
               xlabel="GD step $t$", ylabel=r"loss $f(t)$")
        ax.set_title(f"{KERNEL_LABELS[kernel]} (seed {c['seed']}, $\\mu/L$ = "
                     f"{c['mu_over_L']:.1e})", fontsize=9)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 3))
    axes[0, 0].legend(fontsize=7.5, loc="lower left")
    fig.tight_layout()
    return fig


def plot_transition(results: Sequence[dict], budgets: Sequence[int], n: int, D: int,
                    kernels: Sequence[str] = ("softmax", "gaussian"),
                    floor: float = 1e-12):
    """Experiment (b), rows of ``transition_records`` (d_out = D): per kernel the loss
    after each budget and f* against the width ratio, with E f* = n D / 2 (1 - ratio);
    last panel the eigenvalues lambda_min^+ and lambda_B of B B^T. Losses below
    ``floor`` (zero up to rounding) are drawn at the floor. Returns the figure."""
    from .plotting import KERNEL_COLORS, KERNEL_LABELS, new_figure

    fig, axes = new_figure(ncols=len(kernels) + 1, width=3.7, height=3.4)
    xs = np.linspace(0.25, 1, 50)
    for ax, kernel in zip(axes[:-1], kernels):
        rows = [r for r in results if r["kernel"] == kernel]
        color = KERNEL_COLORS[kernel]
        for T, style in zip(budgets, ("-", ":")):
            x, med, lo, hi = by_ratio(rows, lambda r: max(r["final"][T], floor))
            ax.plot(x, med, color=color, ls=style, marker="o", ms=3,
                    label=f"GD after $10^{{{int(math.log10(T))}}}$ steps")
            ax.fill_between(x, lo, hi, color=color, alpha=0.12, lw=0)
        x, med, _, _ = by_ratio(rows, lambda r: max(r["f_star"], floor))
        ax.scatter(x, med, color="black", marker="x", s=22, zorder=3,
                   label=r"$f^\star$ (closed form)")
        ax.plot(xs, n * D / 2 * (1 - xs), color="black", lw=1, ls="--",
                label=r"$\mathbb{E} f^\star$ (dimension count)")
        ax.set(ylim=(floor / 4, 1e2),
               ylabel=f"loss (floor $10^{{{round(math.log10(floor))}}}$: zero)")
        ax.set_title(KERNEL_LABELS[kernel], fontsize=10)
    for kernel in kernels:
        rows = [r for r in results if r["kernel"] == kernel]
        color = KERNEL_COLORS[kernel]
        x, med, lo, hi = by_ratio(rows, lambda r: r["lambda_plus"])
        axes[-1].plot(x, med, color=color, marker="o", ms=3,
                      label=f"{KERNEL_LABELS[kernel]}: "
                      + r"$\lambda_{\min}^+(BB^\top)$")
        axes[-1].fill_between(x, lo, hi, color=color, alpha=0.12, lw=0)
        xa, meda, _, _ = by_ratio([r for r in rows if r["ratio"] >= 1],
                                  lambda r: r["lambda_B"])
        axes[-1].scatter(xa, meda, facecolors="none", edgecolors=color, marker="s",
                         s=40, label=f"{KERNEL_LABELS[kernel]}: " + r"$\lambda_B > 0$")
    axes[-1].set_title(r"eigenvalues of $BB^\top$ (median, min-max)", fontsize=10)
    axes[-1].text(0.27, 3e-7, "$\\lambda_B = 0$ here:\nrank $B = HD < Nn$", fontsize=8)
    axes[-1].set_ylim(1e-7, 30)
    for ax in axes:
        ax.axvline(1.0, color="grey", lw=1)
        ax.set(xscale="log", yscale="log", xlabel=r"width ratio $HD/(Nn)$")
        ax.set_xscale("log", base=2)
    axes[0].legend(fontsize=7, loc="center left")
    axes[-1].legend(fontsize=6.5, loc="upper center")
    fig.tight_layout()
    return fig


def plot_steps(results: Sequence[dict], budgets: Sequence[int],
               kernels: Sequence[str] = ("softmax", "gaussian")):
    """Experiment (b): the steps GD needs (median, min-max band) and the steps the
    theorem guarantees (median) against the width ratio; dotted lines at the budgets.
    Returns the figure."""
    from .plotting import KERNEL_COLORS, KERNEL_LABELS, new_figure

    fig, ax = new_figure(width=5.6, height=3.8)
    for kernel in kernels:
        rows = [r for r in results if r["kernel"] == kernel]
        color = KERNEL_COLORS[kernel]
        x, med, lo, hi = by_ratio(rows, lambda r: r["steps"])
        ax.plot(x, med, color=color, marker="o", ms=3,
                label=f"{KERNEL_LABELS[kernel]}: steps needed (median, min-max)")
        ax.fill_between(x, lo, hi, color=color, alpha=0.15, lw=0)
        x, med, _, _ = by_ratio(rows, lambda r: r["steps_bound"])
        ax.plot(x, med, color=color, ls="--",
                label=f"{KERNEL_LABELS[kernel]}: guaranteed by the theorem (median)")
    ax.axvline(1.0, color="grey", lw=1)
    for T in budgets:
        ax.axhline(T, color="grey", lw=0.8, ls=":")
    ax.set(yscale="log", xlabel=r"width ratio $HD/(Nn)$", ylabel="GD steps")
    ax.set_xscale("log", base=2)
    ax.legend(fontsize=7, loc="upper left")
    return fig
