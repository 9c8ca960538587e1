"""The landscape study of one-layer problems (chapter "Loss landscapes"): two-stage GD
runs, planes through the solutions, Hessian spectra, the roughness table, the verdict
checks, and the chapter's figures.

    runs = two_stage_runs(problems, seeds, T1, T2, c_lr, trainable)
    trained = {key: trained_layers(runs, key, seeds, D) for key in CENTRES}
    plane = SolutionPlanes(trained, starts, problems, trainable, num=25)
    alphas, Z = plane("gaussian", 0, "random")
    table = roughness_table(plane, spectra, CENTRES, len(seeds), PLANES)
    checks = landscape_verdict(table, PLANES)     # [(statement, holds)]

The three trained points per seed are keyed "softmax" (stage 1 then Softmax),
"gaussian" (a Gaussian run from the same start) and "gaussian (two-stage)" (stage 1
then the Gaussian kernel), as in ``CENTRES``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from .batched import train_layers
from .hessian import full_hessian, hvp
from .landscape import (
    attention_plane,
    get_params,
    interpolate_1d,
    model_loss_fn,
    random_direction,
    roughness,
    symmetry_directions,
)
from .model import AttentionLayer, squared_loss
from .theory import predicted_rate
from .validation import check_choice, check_positive_int

__all__ = [
    "CENTRES",
    "ROUGHNESS_MEASURES",
    "SHOWN_MEASURES",
    "landscape_student",
    "two_stage_runs",
    "trained_layers",
    "interpolation_paths",
    "monotone_bumps",
    "plot_interpolation",
    "SolutionPlanes",
    "loss_change",
    "symmetry_check",
    "hessian_spectra",
    "plot_spectra",
    "plot_two_stage",
    "roughness_table",
    "format_roughness_table",
    "plot_roughness",
    "landscape_verdict",
]

CENTRES = ("softmax", "gaussian", "gaussian (two-stage)")
ROUGHNESS_MEASURES = {
    "local minima": "num_local_minima",
    "total variation": "total_variation",
    "Laplacian": "laplacian",
    "relief": "relief",
    "non-convex fraction": "non_convex_fraction",
}
SHOWN_MEASURES = [
    ("random, [-1, 1]", "total variation"),
    ("random, [-1, 1]", "Laplacian"),
    ("random, [-1, 1]", "non-convex fraction"),
    ("update plane", "non-convex fraction"),
    ("random, [-1, 1]", "relief"),
    ("centre", "lambda_max"),
]
Table = Mapping[str, Mapping[tuple[str, str], np.ndarray]]


def landscape_student(
    kernel: str, seed: int, D: int, device: str | torch.device = "cpu"
) -> AttentionLayer:
    """The student of seed s: ``AttentionLayer(D, kernel, seed=100 + s)`` (one head,
    d = d_v = d_out = D); its initialisation does not depend on the kernel."""
    return AttentionLayer(D, kernel=kernel, seed=100 + seed, device=device)


def _gd(layers, problems, steps, c_lr, trainable):
    """Full-batch GD on every layer (one per problem) at once, eta = c_lr / L_V at the
    start: (trained copies, losses (steps + 1, layers)). RuntimeError if a run
    failed."""
    lrs = [c_lr / predicted_rate(layer, p.X, lr=1.0).L
           for layer, p in zip(layers, problems)]
    XS = torch.stack([p.X for p in problems])
    YS = torch.stack([p.Y for p in problems])
    trained, hist = train_layers(layers, XS, YS, impl="bmm", steps=steps, lr=lrs,
                                 trainable=trainable)
    if hist.failed.any():
        raise RuntimeError(f"GD failed in {int(hist.failed.sum())} of {len(layers)} "
                           f"runs: {hist.messages}")
    return trained, hist.loss


def two_stage_runs(
    problems: Sequence,
    seeds: Sequence[int],
    T1: int,
    T2: int,
    c_lr: float,
    trainable: Sequence[str],
) -> dict:
    """The runs of the two-stage protocol, one per seed (problem s: ``problems[s]`` with
    X (N, n, D), Y (N, n, D)), all runs of one kind in one batched computation.

    Stage 1: Softmax, T1 steps from the student's start; stage 2: T2 steps each of a
    Softmax copy and a copy switched to the Gaussian kernel; and a Gaussian run from the
    start with the same two segments. Every segment uses eta = c_lr / L_V at its start.
    Returns {"stage1", "softmax", "gaussian", "gaussian (two-stage)": [state dict per
    seed], "loss": {key of CENTRES: (T1 + T2 + 1, seeds) losses}}.
    """
    check_positive_int(T1, "T1")
    check_positive_int(T2, "T2")
    if len(problems) != len(seeds):
        raise ValueError(f"need one problem per seed, got {len(problems)} problems for "
                         f"{len(seeds)} seeds")
    D, device = problems[0].X.shape[-1], problems[0].X.device
    trainable = tuple(trainable)

    def gd(layers, steps):
        return _gd(layers, problems, steps, c_lr, trainable)

    stage1, loss1 = gd([landscape_student("softmax", s, D, device) for s in seeds], T1)
    soft, loss_soft = gd(stage1, T2)
    branch, loss_branch = gd([layer.copy("gaussian") for layer in stage1], T2)
    mid, loss_g1 = gd([landscape_student("gaussian", s, D, device) for s in seeds], T1)
    gauss, loss_g2 = gd(mid, T2)
    weights = {
        key: [{k: v.clone() for k, v in layer.state_dict().items()} for layer in ls]
        for key, ls in (("stage1", stage1), ("softmax", soft), ("gaussian", gauss),
                        ("gaussian (two-stage)", branch))
    }
    return {**weights, "loss": {
        "softmax": np.concatenate([loss1, loss_soft[1:]]),
        "gaussian": np.concatenate([loss_g1, loss_g2[1:]]),
        "gaussian (two-stage)": np.concatenate([loss1, loss_branch[1:]])}}


def trained_layers(
    runs: Mapping, key: str, seeds: Sequence[int], D: int
) -> list[AttentionLayer]:
    """The layers of ``runs[key]`` (``two_stage_runs``), one per seed, with the kernel
    of that run ("stage1" and "softmax": Softmax, the others Gaussian)."""
    check_choice(key, "key", ("stage1", *CENTRES))
    kernel = "softmax" if key in ("softmax", "stage1") else "gaussian"
    layers = [landscape_student(kernel, s, D) for s in seeds]
    for layer, state in zip(layers, runs[key]):
        layer.load_state_dict(state)
    return layers


def interpolation_paths(
    starts: Sequence[AttentionLayer],
    ends: Sequence[AttentionLayer],
    problems: Sequence,
    trainable: Sequence[str],
    t_grid: np.ndarray,
) -> list[np.ndarray]:
    """The loss on the straight line from each start to its end (W_O, not trained, the
    same at both ends), at the points t_grid (T,) (evenly spaced): one (T,) array per
    pair."""
    t_grid = np.asarray(t_grid, dtype=float)
    paths = []
    for start, end, p in zip(starts, ends, problems):
        loss_fn = model_loss_fn(end, p.X, p.Y)
        paths.append(interpolate_1d(
            loss_fn, get_params(start, trainable), get_params(end, trainable),
            num=len(t_grid), extend=(t_grid[0], t_grid[-1]))[1])
    return paths


def monotone_bumps(g: np.ndarray) -> np.ndarray:
    """The largest rise above the lowest value seen so far, relative to the start, of
    every row of g (seeds, T): max_t (g(t) - min_{s <= t} g(s)) / g(0); 0 exactly when
    the row is non-increasing."""
    g = np.asarray(g, dtype=float)
    if g.ndim != 2 or g.shape[1] == 0:
        raise ValueError(f"g must have shape (seeds, T) with T >= 1, got {g.shape}")
    return np.max(g - np.minimum.accumulate(g, axis=1), axis=1) / g[:, 0]


def plot_interpolation(
    t_grid: np.ndarray, paths: Mapping[str, Sequence[np.ndarray]], inside: np.ndarray
):
    """Left: the first path of each kernel on the whole grid, log scale; right: every
    path on the points ``inside`` (a boolean mask of t_grid), relative to its first
    value there. paths: {kernel: [(T,) per seed]}. Returns the figure."""
    from .plotting import KERNEL_COLORS, KERNEL_LABELS, new_figure

    fig, axes = new_figure(ncols=2, width=4.4, height=3.3)
    for k, runs in paths.items():
        axes[0].semilogy(t_grid, runs[0], color=KERNEL_COLORS[k], lw=1.8,
                         label=KERNEL_LABELS[k])
        for s, g in enumerate(runs):
            axes[1].plot(t_grid[inside], g[inside] / g[inside][0],
                         color=KERNEL_COLORS[k], lw=1.0, alpha=0.7,
                         label=KERNEL_LABELS[k] if s == 0 else None)
    for ax in axes:
        for t in (0, 1):
            ax.axvline(t, color="0.5", lw=0.8, ls=":")
        ax.set_xlabel(r"$t$ (0: initial weights, 1: solution)")
    n_seeds = len(next(iter(paths.values())))
    axes[0].set(ylabel=r"$f((1-t)\theta_0 + t\theta^\star)$", title="seed 0")
    axes[1].set(ylabel=r"$g(t)\,/\,g(0)$", title=f"all {n_seeds} seeds, $t\\in[0, 1]$")
    axes[0].legend()
    fig.tight_layout()
    return fig


class SolutionPlanes:
    """The loss of a solution on a plane through it, ``plane(key, s, kind, span)`` ->
    (alphas (num,), Z (num, num)) from ``lib.landscape.attention_plane``.

    kind "random": two filter-normalised random directions in ``trainable`` (seeds
    1000 + s and 2000 + s, the same for every key); kind "update": the changes of W_Q
    and W_K from ``starts[s]`` to the solution.
    trained: {key: [layer per seed]}; starts: [layer per seed]; problems: [problem per
    seed] with X, Y.
    """

    def __init__(self, trained: Mapping[str, Sequence[AttentionLayer]],
                 starts: Sequence[AttentionLayer], problems: Sequence,
                 trainable: Sequence[str], num: int) -> None:
        self.trained, self.starts, self.problems = trained, starts, problems
        self.trainable = tuple(trainable)
        self.num = check_positive_int(num, "num")

    def __call__(self, key: str, s: int, kind: str,
                 span: tuple[float, float] = (-1.0, 1.0)) -> tuple[np.ndarray,
                                                                   np.ndarray]:
        check_choice(kind, "kind", ("random", "update"))
        layer = self.trained[key][s]
        if kind == "random":
            centre = get_params(layer, self.trainable)
            dirs = [random_direction(centre, seed=1000 * j + s) for j in (1, 2)]
        else:
            start = self.starts[s]
            dirs = [{w: (getattr(layer, w) - getattr(start, w)).detach()}
                    for w in ("W_Q", "W_K")]
        return attention_plane(layer, self.problems[s].X, self.problems[s].Y, *dirs,
                               span=span, num=self.num)


def loss_change(layer: AttentionLayer, X: torch.Tensor, Y: torch.Tensor,
                new_Q: torch.Tensor, new_K: torch.Tensor) -> float:
    """|f(layer with W_Q = new_Q, W_K = new_K) - f(layer)| on (X, Y); the layer is
    unchanged."""
    moved = layer.copy()
    with torch.no_grad():
        moved.W_Q.copy_(new_Q)
        moved.W_K.copy_(new_K)
    f, f_moved = (model_loss_fn(m, X, Y)({}) for m in (layer, moved))
    return abs(f_moved - f)


def symmetry_check(
    layer: AttentionLayer,
    X: torch.Tensor,
    Y: torch.Tensor,
    E: torch.Tensor,
    trainable: Sequence[str] = ("W_Q", "W_K", "W_V"),
) -> tuple[float, float, float]:
    """Parts 1 and 2 of the symmetry proposition at the layer's weights (one head),
    for E (d, d) (skew-symmetric for the Gaussian kernel).

    Returns (|f(W_Q A, W_K A^-T or W_K A) - f| with A = exp(E / 2), the relative
    residual of H E theta = -E^T grad f (Hessian-vector product against the
    transformed gradient), |H E theta|). ``trainable`` lists W_Q, W_K first, then
    W_V."""
    kernel = layer.kernel
    check_choice(kernel, "layer.kernel", ("softmax", "gaussian"))
    if tuple(trainable) != ("W_Q", "W_K", "W_V"):
        raise ValueError(f"trainable must be ('W_Q', 'W_K', 'W_V'), got {trainable!r}")
    A = torch.linalg.matrix_exp(0.5 * E)
    new_K = layer.W_K @ (torch.linalg.inv(A).T if kernel == "softmax" else A)
    change = loss_change(layer, X, Y, layer.W_Q @ A, new_K)
    # (landscapes-hess-sym): Hessian times the generator direction vs -E^T grad f
    sign = -1.0 if kernel == "softmax" else 1.0
    E_K = E.T if kernel == "softmax" else E
    zeros = torch.zeros(layer.W_V.numel(), dtype=torch.float64)
    direction = torch.cat([(layer.W_Q.detach() @ E).ravel(),
                           sign * (layer.W_K.detach() @ E_K).ravel(), zeros])
    loss = squared_loss(layer(X), Y)
    g_Q, g_K = torch.autograd.grad(loss, [layer.W_Q, layer.W_K])
    rhs = -torch.cat([(g_Q @ E.T).ravel(), sign * (g_K @ E_K.T).ravel(), zeros])
    lhs = hvp(layer, X, Y, tuple(trainable), direction)
    return change, float((lhs - rhs).norm() / lhs.norm()), float(lhs.norm())


def hessian_spectra(
    layers: Sequence[AttentionLayer], problems: Sequence, trainable: Sequence[str]
) -> tuple[list[np.ndarray], list[float]]:
    """For every layer (one per problem): the eigenvalues (P,) of the full Hessian in
    ``trainable`` (ascending), and the largest |curvature| on the symmetry subspace
    (``lib.landscape.symmetry_directions``) relative to the largest eigenvalue."""
    spectra, sym_curvature = [], []
    for layer, p in zip(layers, problems):
        H = full_hessian(layer, p.X, p.Y, trainable)
        lam = torch.linalg.eigvalsh(H).numpy()
        U = symmetry_directions(layer, trainable)  # orthonormal basis of {E theta}
        spectra.append(lam)
        curvature = torch.linalg.eigvalsh(U.T @ H @ U).abs().max()
        sym_curvature.append(float(curvature) / lam[-1])
    return spectra, sym_curvature


def plot_spectra(spectra: Mapping[str, tuple[np.ndarray, str]]):
    """Eigenvalues, largest first, symmetric-log scale (linear within +-1e-3).
    spectra: {label: (eigenvalues (P,) ascending, colour)}. Returns the figure."""
    from .plotting import new_figure

    fig, ax = new_figure(width=6.4, height=3.4)
    for label, (lam, color) in spectra.items():
        ax.plot(np.arange(1, len(lam) + 1), lam[::-1], ".", ms=3.5, color=color,
                label=label)
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xlabel("eigenvalue index (largest first)")
    ax.set_ylabel(r"eigenvalue of $\nabla^2 f(\theta^\star)$")
    ax.legend()
    return fig


def plot_two_stage(losses: Mapping[str, np.ndarray], T1: int,
                   colors: Mapping[str, str]):
    """The two-stage losses relative to the initial loss: median over seeds and a
    min-max band, the common stage 1 drawn once (with the Softmax branch), the
    Gaussian branch from the switch at T1. losses: {"softmax", "gaussian (two-stage)":
    (T1 + T2 + 1, seeds)}. Returns the figure."""
    from .plotting import new_figure

    fig, ax = new_figure(width=6.4, height=3.4)
    for key, label in (("softmax", "stage 1, then Softmax"),
                       ("gaussian (two-stage)", "Gaussian branch")):
        rel = losses[key] / losses[key][0]
        steps = np.arange(len(rel))
        part = slice(None) if key == "softmax" else slice(T1, None)
        ax.plot(steps[part], np.median(rel, axis=1)[part], color=colors[key], lw=1.8,
                label=f"{label} (median of {rel.shape[1]})")
        ax.fill_between(steps[part], rel.min(axis=1)[part], rel.max(axis=1)[part],
                        color=colors[key], alpha=0.2, lw=0)
    ax.axvline(T1, color="0.3", lw=0.8, ls="--")
    ax.text(T1, 1.0, "  kernel switch", va="top", fontsize=9)
    ax.set_yscale("log")
    ax.set_xlabel("GD step")
    ax.set_ylabel(r"$f(\theta_t)\,/\,f(\theta_0)$")
    ax.legend(loc="lower left")
    return fig


def roughness_table(
    plane: SolutionPlanes,
    spectra: Mapping[str, Sequence[np.ndarray]],
    keys: Sequence[str],
    n_seeds: int,
    planes: Mapping[str, tuple[tuple[float, float], str]],
) -> dict[str, dict[tuple[str, str], np.ndarray]]:
    """{key: {(plane name, measure): (n_seeds,) values}}: the ``ROUGHNESS_MEASURES`` of
    every plane {name: (span, kind)} of every seed, and at the centre ("centre",
    "lambda_max") and ("centre", "negative-curvature fraction"), the fraction of
    Hessian eigenvalues (``spectra[key][s]``, ascending) below -1e-2 lambda_max."""
    table: dict = {key: {} for key in keys}
    for key in keys:
        for s in range(n_seeds):
            rows = {}
            for plane_name, (span, kind) in planes.items():
                r = roughness(plane(key, s, kind, span=span)[1])
                rows.update({(plane_name, m): r[name]
                             for m, name in ROUGHNESS_MEASURES.items()})
            lam = spectra[key][s]
            rows["centre", "lambda_max"] = lam[-1]
            rows["centre", "negative-curvature fraction"] = float(
                (lam < -1e-2 * lam[-1]).mean())
            for name, value in rows.items():
                table[key].setdefault(name, []).append(value)
    return {key: {name: np.array(v) for name, v in rows.items()}
            for key, rows in table.items()}


def format_roughness_table(table: Table, labels: Mapping[str, str]) -> str:
    """Text table: one line per (plane, measure), one column per key of ``labels``,
    cells "median [min, max]" over seeds."""
    keys = list(labels)
    lines = [f"median [min, max] over {len(table[keys[0]]['centre', 'lambda_max'])} "
             "seeds", f"{'':<44}" + "".join(f"{labels[k]:>27}" for k in keys)]
    for name in table[keys[0]]:
        fmt = "{:.0f}" if name[1] == "local minima" else "{:.3g}"
        cells = [" ".join((fmt.format(np.median(v)), f"[{fmt.format(v.min())},",
                           f"{fmt.format(v.max())}]"))
                 for v in (table[k][name] for k in keys)]
        lines.append(f"{name[0] + ': ' + name[1]:<44}" + "".join(f"{c:>27}"
                                                                  for c in cells))
    return "\n".join(lines)


def plot_roughness(table: Table, colors: Mapping[str, str],
                   shown: Sequence[tuple[str, str]] = tuple(SHOWN_MEASURES)):
    """Every seed's value (dots, jittered with a fixed seed) and the median (bar) of six
    measures ``shown`` [(plane, measure)], one column per key of ``colors``
    (``CENTRES`` order). Returns the figure."""
    from .plotting import new_figure

    keys = list(colors)
    fig, axes = new_figure(ncols=3, nrows=2, width=3.0, height=2.6)
    rng = np.random.default_rng(0)
    for ax, name in zip(axes.ravel(), shown):
        for i, key in enumerate(keys):
            values = table[key][name]
            ax.plot(i + rng.uniform(-0.15, 0.15, len(values)), values, "o", ms=3.5,
                    color=colors[key], alpha=0.8)
            ax.plot([i - 0.3, i + 0.3], [np.median(values)] * 2, color=colors[key],
                    lw=2)
        ax.set_xticks(range(len(keys)), ["Softmax", "Gaussian", "Gauss.\n2-stage"],
                      fontsize=8)
        title = name[1].replace("lambda_max", "top Hessian eigenvalue")
        ax.set_title(f"{title}\n({name[0]})", fontsize=9)
        if name[1] in ("relief", "lambda_max"):
            ax.set_yscale("log")
    fig.tight_layout()
    return fig


def landscape_verdict(table: Table, planes: Sequence[str]) -> list[tuple[str, bool]]:
    """The chapter's verdict as checks on the medians over seeds of ``table``
    (``roughness_table`` with the keys of ``CENTRES`` and the planes "random, [-1, 1]",
    "random, [-0.25, 0.25]" among ``planes``): [(statement with its numbers, holds)]."""
    med = {key: {name: float(np.median(v)) for name, v in rows.items()}
           for key, rows in table.items()}
    G2 = "gaussian (two-stage)"
    R, NEAR = "random, [-1, 1]", "random, [-0.25, 0.25]"
    tv = [med[k][R, "total variation"] for k in CENTRES]
    lap = {k: med[k][R, "Laplacian"] for k in CENTRES}
    ncf = {k: med[k][R, "non-convex fraction"] for k in CENTRES}
    near = {k: med[k][NEAR, "non-convex fraction"] for k in CENTRES}
    relief = {k: med[k][R, "relief"] for k in CENTRES}
    lap_near = [med[k][NEAR, "Laplacian"] for k in CENTRES]
    top = [med[k]["centre", "lambda_max"] for k in CENTRES]
    return [
        # 1. No slice is rugged in the usual sense: one basin, no ripples
        ("median number of local minima is 1 on every plane, for every kernel",
         all(med[k][p, "local minima"] == 1 for k in CENTRES for p in planes)),
        # 2. Total variation does not separate the kernels
        ("total variation (random planes): medians within 20% of each other "
         f"({', '.join(f'{v:.2f}' for v in tv)})", max(tv) < 1.2 * min(tv)),
        # 3. The Laplacian measure is not smaller for the Gaussian
        ("Laplacian (random planes): Gaussian median >= Softmax median, single-stage "
         "and two-stage", lap["gaussian"] >= lap["softmax"] and lap[G2] >= lap[
             "softmax"]),
        # 4. Far field: Gaussian planes mostly non-convex (plateau), Softmax mostly
        # convex
        (f"non-convex fraction (random, [-1, 1]): Gaussian {ncf['gaussian']:.2f} and "
         f"two-stage {ncf[G2]:.2f} vs Softmax {ncf['softmax']:.2f}",
         min(ncf["gaussian"], ncf[G2]) > 0.5 > 2 * ncf["softmax"]),
        # 5. Near field: both are convex basins
        ("near field (random, [-0.25, 0.25]): non-convex fraction below 0.1 for every "
         "kernel", max(near.values()) < 0.1),
        # 6. The Softmax relief is much larger (a steep bowl, no plateau)
        ("relief (random, [-1, 1]): Softmax median > 2 x both Gaussian medians",
         relief["softmax"] > 2 * max(relief["gaussian"], relief[G2])),
        # 7. Near the solution the Laplacian measures are close
        ("Laplacian (random, [-0.25, 0.25]): medians within 25% of each other "
         f"({', '.join(f'{v:.2g}' for v in lap_near)})",
         max(lap_near) < 1.25 * min(lap_near)),
        # 8. Curvature at the centre: same sharpness, (almost) no negative curvature
        ("lambda_max: medians within a factor 2 of each other "
         f"({', '.join(f'{v:.3g}' for v in top)})", max(top) < 2 * min(top)),
        ("negative-curvature fraction: median 0 for every kernel",
         all(med[k]["centre", "negative-curvature fraction"] == 0 for k in CENTRES)),
    ]
