"""The gradient-descent study of the one-layer chapter: teacher problems with a
student, the step-size sweep, summaries of runs over seeds, gradient-norm plots, and
the linear rate of GD on the value weights alone.

    prob, student, L_V = teacher_student("softmax", seed=0)   # N=8, n=4, D=16, H=2
    runs = gd_runs("softmax", seeds=range(5), steps=300, factor=0.5)   # eta = 0.5/L_V
    summary = run_summary(runs)          # f_T/f_0, rises, statuses, early/late rates
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from .data import RegressionProblem, teacher_problem
from .model import AttentionLayer
from .plotting import KERNEL_COLORS, KERNEL_LABELS, new_figure, plot_loss_curves
from .tables import Table
from .theory import RateBound, optimal_values, predicted_rate
from .trainer import History, train
from .validation import check_positive_int

__all__ = [
    "MATRIX_COLORS", "teacher_student", "value_only_problem", "train_with_warnings",
    "loss_rises", "gd_runs", "step_factor_sweep", "sweep_table", "RunSummary",
    "run_summary", "summary_table", "plot_grad_norms", "grad_norm_table",
    "value_only_runs", "linear_rate_check", "plot_relative_losses", "plot_value_gaps",
]

#: One colour per weight matrix (Okabe-Ito colours not used by the kernels).
MATRIX_COLORS = {"W_Q": "#E69F00", "W_K": "#56B4E9", "W_V": "#CC79A7", "W_O": "#000000"}


def teacher_student(kernel: str, seed: int, device: str | torch.device = "cpu"
                    ) -> tuple[RegressionProblem, AttentionLayer, float]:
    """The four-matrix problem of seed ``seed``: a teacher problem (N=8, n=4, D=16,
    H=2, d = d_v = d_out = D), a LeCun-initialised student (seed 1000 + seed) and L_V,
    the largest eigenvalue of the W_V-block Hessian J^T J / N of the student."""
    prob = teacher_problem(8, 4, 16, kernel=kernel, H=2, seed=seed, device=device)
    student = AttentionLayer(16, H=2, kernel=kernel, seed=1000 + seed, device=device)
    return prob, student, predicted_rate(student, prob.X, lr=1.0).L


def value_only_problem(kernel: str, seed: int, device: str | torch.device = "cpu"
                       ) -> tuple[RegressionProblem, AttentionLayer]:
    """The narrow W_V-only problem of seed ``seed``: a teacher problem (N=8, n=4, D=4,
    H=1) and an orthogonally initialised student (seed 100 + seed)."""
    prob = teacher_problem(8, 4, 4, kernel=kernel, H=1, seed=seed, device=device)
    student = AttentionLayer(4, kernel=kernel, init="orthogonal", seed=100 + seed,
                             device=device)
    return prob, student


def train_with_warnings(model: AttentionLayer, X: torch.Tensor, Y: torch.Tensor,
                        **config: Any) -> tuple[History, list[warnings.WarningMessage]]:
    """``train(model, X, Y, **config)``, returning the history and every warning it
    issued (recorded, not shown)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = train(model, X, Y, **config)
    return history, list(caught)


def loss_rises(loss: Sequence[float]) -> int:
    """The number of steps t at which f(theta_{t+1}) > f(theta_t)."""
    return int((np.diff(np.asarray(loss, dtype=float)) > 0).sum())


def gd_runs(kernel: str, seeds: Iterable[int], steps: int, factor: float,
            device: str | torch.device = "cpu") -> list[History]:
    """GD on all four matrices of ``teacher_student(kernel, seed)`` for each seed,
    with eta = factor / L_V (L_V of each run's own student); failures are recorded in
    the statuses and their warnings not shown."""
    steps = check_positive_int(steps, "steps")
    runs = []
    for seed in seeds:
        prob, student, L_V = teacher_student(kernel, seed, device)
        runs.append(train_with_warnings(student, prob.X, prob.Y, steps=steps,
                                        lr=factor / L_V)[0])
    return runs


def step_factor_sweep(kernels: Sequence[str], factors: Sequence[float], steps: int,
                      seed: int = 0, device: str | torch.device = "cpu"
                      ) -> dict[tuple[str, float], tuple[float, int, str]]:
    """{(kernel, c): (f_steps / f_0, steps at which the loss rose, status)} for GD with
    eta = c / L_V on the problem of seed ``seed``."""
    sweep = {}
    for kernel in kernels:
        for c in factors:
            hist = gd_runs(kernel, [seed], steps, c, device)[0]
            sweep[kernel, c] = (hist.loss[-1] / hist.loss[0], loss_rises(hist.loss),
                                hist.status)
    return sweep


def sweep_table(sweep: Mapping[tuple[str, float], tuple[float, int, str]]) -> Table:
    """The sweep as a table: one row per factor c, per kernel f_T/f_0, rises and
    status."""
    kernels = list(dict.fromkeys(k for k, _ in sweep))
    factors = list(dict.fromkeys(c for _, c in sweep))
    header = ["c"] + [f"{KERNEL_LABELS.get(k, k)}: {what}" for k in kernels
                      for what in ("f_T/f_0", "rises", "status")]
    rows = [[f"{c:g}"] + [v for k in kernels for v in (
        f"{sweep[k, c][0]:.1e}", sweep[k, c][1], sweep[k, c][2])] for c in factors]
    return Table(header, rows)


@dataclass
class RunSummary:
    """Runs of one kernel over seeds: ratios (seeds,) f_T/f_0, rises (seeds,) steps
    at which the loss rose, the set of statuses, and the average per-step factors
    (f_w/f_0)^(1/w) over the first and (f_T/f_{T-w})^(1/w) over the last w = window
    steps."""

    ratios: np.ndarray
    rises: list[int]
    statuses: set[str]
    early: list[float]
    late: list[float]
    window: int = 100


def run_summary(runs: Sequence[History], window: int = 100) -> RunSummary:
    """Summarise runs of equal length > ``window`` steps (see ``RunSummary``)."""
    window = check_positive_int(window, "window")
    if not runs or any(len(h.loss) <= window for h in runs):
        raise ValueError(f"runs must be a non-empty list of histories of more than "
                         f"window = {window} steps")
    return RunSummary(
        ratios=np.array([h.loss[-1] / h.loss[0] for h in runs]),
        rises=[loss_rises(h.loss) for h in runs],
        statuses={h.status for h in runs},
        early=[(h.loss[window] / h.loss[0])**(1 / window) for h in runs],
        late=[(h.loss[-1] / h.loss[-1 - window])**(1 / window) for h in runs],
        window=window,
    )


def summary_table(summaries: Mapping[str, RunSummary]) -> Table:
    """One row per kernel: statuses, range and median of f_T/f_0, the largest early
    and the smallest late per-step factor, and the rises per seed."""
    rows = [[KERNEL_LABELS.get(k, k), ", ".join(sorted(s.statuses)),
             f"{s.ratios.min():.1e} to {s.ratios.max():.1e}",
             f"{np.median(s.ratios):.1e}", f"{max(s.early):.3f}", f"{min(s.late):.4f}",
             " ".join(str(r) for r in s.rises)] for k, s in summaries.items()]
    windows = {s.window for s in summaries.values()}
    w = windows.pop() if len(windows) == 1 else "w"
    return Table([
        "kernel", "statuses", "f_T/f_0", "median f_T/f_0",
        f"per-step factor, first {w} steps (max)",
        f"per-step factor, last {w} steps (min)", "steps with a rise, per seed"
    ], rows)


def plot_grad_norms(histories: Mapping[str, History]) -> Figure:
    """Gradient norm of every trained matrix along one run per kernel, one panel per
    kernel (log scale, shared y axis)."""
    if not histories:
        raise ValueError("histories must hold one run per kernel")
    fig, axes = new_figure(ncols=len(histories), width=4.2, height=3.2, sharey=True,
                           squeeze=False)
    axes = axes[0]
    for ax, (kernel, hist) in zip(axes, histories.items()):
        for name, norms in hist.grad_norms.items():
            ax.semilogy(norms, color=MATRIX_COLORS.get(name, "0.5"), lw=1.4,
                        label=f"$\\nabla_{{{name}}} f$")
        ax.set_title(KERNEL_LABELS.get(kernel, kernel), color=KERNEL_COLORS.get(
            kernel, "black"))
        ax.set_xlabel("GD step t")
    axes[0].set_ylabel(r"$\|\nabla_W f(\theta_t)\|_F$")
    axes[-1].legend(ncol=2)
    fig.tight_layout()
    return fig


def grad_norm_table(norms: Mapping[str, Mapping[str, Sequence[float]]]) -> Table:
    """One row per kernel and weight matrix: the gradient norm at t = 0 and the factor
    by which it fell until the last step. norms: {kernel: {matrix: (T,) norms}}, e.g.
    ``history.grad_norms`` of one run per kernel."""
    return Table(["kernel", "matrix", "||grad|| at t=0", "reduced by"], [
        [KERNEL_LABELS.get(k, k), name, f"{v[0]:.2g}", f"{v[0] / v[-1]:.0f}x"]
        for k, per_matrix in norms.items() for name, v in per_matrix.items()])


def value_only_runs(kernel: str, seeds: Iterable[int], steps: int,
                    device: str | torch.device = "cpu"
                    ) -> list[tuple[History, float, RateBound]]:
    """GD on W_V alone with eta = 1/L on ``value_only_problem(kernel, seed)`` for each
    seed: [(history, f* the closed-form optimum, the rate bound at eta = 1/L)]."""
    runs = []
    for seed in seeds:
        prob, student = value_only_problem(kernel, seed, device)
        bound = predicted_rate(student, prob.X, lr=1.0)
        bound = predicted_rate(student, prob.X, lr=1.0 / bound.L)  # eta = 1/L
        f_star = optimal_values(student, prob.X, prob.Y).loss
        hist = train(student, prob.X, prob.Y, steps=steps, lr=bound.lr,
                     trainable=("W_V",))
        runs.append((hist, f_star, bound))
    return runs


def linear_rate_check(hist: History, f_star: float, bound: RateBound,
                      window: tuple[float, float] = (1e-5, 1e-10)
                      ) -> tuple[float, float, bool]:
    """How a W_V-only run matches the theory. Returns (|f_T - f*| / f*, relative
    difference between the observed per-step factor of the gap and the predicted
    (1 - eta mu)^2, whether gap_t <= rate^t gap_0 at every step).

    The observed factor is measured where gap_t / gap_0 lies inside ``window`` (the
    straight part of the curve, above the rounding floor); the PL bound is checked up to
    rounding in f (1e-12 f(theta_0)).
    """
    loss = np.asarray(hist.loss, dtype=float)
    gap, t = loss - f_star, np.arange(len(loss))
    bound_ok = bool(np.all(gap <= bound.rate**t * gap[0] + 1e-12 * loss[0]))
    w = np.where((gap / gap[0] < window[0]) & (gap / gap[0] > window[1]))[0]
    if len(w) < 2:
        raise ValueError(f"the gap never passes through the window {window} of its "
                         "initial value: run more steps")
    observed = (gap[w[-1]] / gap[w[0]])**(1 / (w[-1] - w[0]))
    predicted = (1 - bound.lr * bound.mu)**2
    return abs(loss[-1] - f_star) / f_star, abs(
        observed - predicted) / predicted, bound_ok


def plot_relative_losses(runs: Mapping[str, Sequence[History]], title: str = ""
                         ) -> Figure:
    """f(theta_t) / f(theta_0) of every run, per kernel: the median over seeds with a
    min-max band, log scale. runs: {kernel: [history of seed 0, seed 1, ...]}."""
    fig, ax = new_figure(width=6.0, height=3.6)
    plot_loss_curves(ax, {k: [np.array(h.loss) / h.loss[0] for h in hists]
                          for k, hists in runs.items()},
                     ylabel=r"relative loss $f(\theta_t)/f(\theta_0)$")
    ax.set_title(title)
    return fig


def plot_value_gaps(runs: Mapping[str, Sequence[tuple[History, float, Any]]],
                    floor: float = 1e-14, title: str = "") -> Figure:
    """Optimality gaps (f(theta_t) - f*) / (f(theta_0) - f*) of W_V-only runs, per
    kernel (median over seeds, min-max band, log scale). runs: {kernel: [(history, f*,
    ...)]} as from ``value_only_runs``; gaps below ``floor`` (rounding noise) are
    clipped to it."""
    fig, ax = new_figure(width=6.0, height=3.6)
    gaps = {k: [np.maximum((np.array(h.loss) - fs) / (h.loss[0] - fs), floor)
                for h, fs, *_ in kernel_runs] for k, kernel_runs in runs.items()}
    plot_loss_curves(ax, gaps,
                     ylabel=r"$(f(\theta_t) - f^\star)\,/\,(f(\theta_0) - f^\star)$")
    ax.set_ylim(floor / 3, 3)
    ax.set_title(title)
    return fig
