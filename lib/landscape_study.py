"""The two-stage landscape study of real tasks (chapter 09): train, slice, measure,
compare.

    rec, models, (Xe, ye) = landscape_study(make_model, train, test, task_settings,
    land_settings) rec["kernels"]["gaussian"]["roughness"]        # one dict of
    measures per direction pair plot_slices(rec, "title"); plot_measures({"imdb":
    rec}, "title", labels) display(comparison_table({"imdb": rec}, labels));
    medians(records)

Protocol: ``lib.minibatch.two_stage`` trains a Softmax first stage, then one second
stage per kernel from it; around each second-stage solution theta, 2-D slices of the
loss on a fixed evaluation batch E of training examples along filter-normalised random
directions (``lib.landscape``), their roughness measures, and the extreme Hessian
eigenvalues (Lanczos,
``lib.hessian.extreme_eigenvalues``). A record is plain data (lists, floats), ready for
JSON.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .hessian import extreme_eigenvalues, hvp
from .landscape import get_params, module_loss_fn, random_direction, roughness, slice_2d
from .minibatch import MinibatchConfig, two_stage
from .plotting import KERNEL_COLORS, KERNEL_LABELS, new_figure
from .tables import Table

__all__ = [
    "KERNELS",
    "MEASURES",
    "batch_loss",
    "landscape_study",
    "stage_config",
    "hvp_relative_error",
    "measure_values",
    "medians",
    "comparison_table",
    "plot_slices",
    "plot_measures",
    "jsonable",
    "describe",
    "check_slices",
    "median_verdicts",
    "compare_medians",
]

KERNELS = ("softmax", "gaussian")
MEASURES = {
    "num_local_minima": "local minima",
    "total_variation": "normalised TV",
    "laplacian": "Laplacian measure",
}


def batch_loss(
    model: nn.Module, X: torch.Tensor, y: torch.Tensor, chunk: int = 8
) -> torch.Tensor:
    """Mean cross-entropy on (X, y), ``chunk`` examples at a time (short batches are
    faster on a CPU)."""
    total = sum(
        F.cross_entropy(model(X[i : i + chunk]), y[i : i + chunk], reduction="sum")
        for i in range(0, len(y), chunk)
    )
    return total / len(y)


def _history(h) -> dict[str, list]:
    return {
        "eval_steps": list(h.eval_steps),
        "test_acc": list(h.test_acc),
        "test_loss": list(h.test_loss),
    }


def stage_config(cfg: Mapping[str, Any], steps: int) -> MinibatchConfig:
    """The mini-batch settings of one stage of ``steps`` steps: optimizer, lr,
    momentum, batch_size and (optional, default 0) warmup_steps from ``cfg``; one
    evaluation at the start and one at the end. Each stage starts a fresh optimizer,
    so a warm-up applies to both stages."""
    return MinibatchConfig(
        optimizer=cfg["optimizer"], lr=cfg["lr"], momentum=cfg["momentum"],
        batch_size=cfg["batch_size"], warmup_steps=cfg.get("warmup_steps", 0),
        steps=steps, eval_every=max(steps, 1), eval_batch_size=100)


def landscape_study(
    make_model: Callable[[int], nn.Module],
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    cfg: Mapping[str, Any],
    land: Mapping[str, Any],
    *,
    device: torch.device | str | None = None,
    lanczos_tol: float = 1e-2,
) -> tuple[dict[str, Any], dict[str, nn.Module], tuple[torch.Tensor, torch.Tensor]]:
    """Run the protocol for one task: returns (record, {kernel: stage-2 model},
    evaluation batch E).

    cfg: optimizer, lr, momentum, batch_size, stage1_steps, stage2_steps, (optional)
    warmup_steps,
    eval_examples (size of E, drawn from the training set with seed 1). land: grid,
    span, direction_seeds (pair r uses seeds 2r and 2r + 1), lanczos_iters. A
    diverged run raises (its RuntimeWarning becomes an error).
    """

    def config(steps: int) -> MinibatchConfig:
        return stage_config(cfg, steps)

    with warnings.catch_warnings():
        warnings.simplefilter(
            "error", RuntimeWarning
        )  # a diverged run stops here, never silently
        run = two_stage(
            make_model,
            train,
            test,
            config(cfg["stage1_steps"]),
            config(cfg["stage2_steps"]),
            kernels=KERNELS,
            stage1_kernel="softmax",
            seed=0,
            device=device,
        )
    idx = torch.randperm(len(train[1]), generator=torch.Generator().manual_seed(1))[
        : cfg["eval_examples"]
    ]
    dev = next(run["stage1_model"].parameters()).device
    Xe, ye = train[0][idx].to(dev), train[1][idx].to(dev)
    record: dict[str, Any] = {
        "stage1": _history(run["stage1"]),
        "kernels": {},
        "num_weights": sum(p.numel() for p in run["stage1_model"].parameters()),
        "test_label_fraction": float(test[1].float().mean()),
    }  # share of label 1 in the test set
    for kernel in KERNELS:
        model = run["models"][kernel].eval()
        center = get_params(model)
        loss_fn = module_loss_fn(model, lambda m: batch_loss(m, Xe, ye))
        grids = []
        for r in land["direction_seeds"]:
            d1, d2 = random_direction(center, seed=2 * r), random_direction(
                center, seed=2 * r + 1
            )
            alphas, _, Z = slice_2d(
                loss_fn,
                center,
                d1,
                d2,
                span=(-land["span"], land["span"]),
                num=land["grid"],
            )
            grids.append(np.asarray(Z).tolist())
        names = [name for name, _ in model.named_parameters()]
        top, bottom, info = extreme_eigenvalues(
            model,
            Xe,
            ye,
            names,
            k=1,
            iters=land["lanczos_iters"],
            tol=lanczos_tol,
            loss_fn=F.cross_entropy,
            with_info=True,
        )
        record["kernels"][kernel] = {
            "history": _history(run["histories"][kernel]),
            "center_loss": float(loss_fn(center)),
            "alphas": np.asarray(alphas).tolist(),
            "Z": grids,
            "roughness": [roughness(np.asarray(Z)) for Z in grids],
            "top_eig": float(top[0]),
            "bottom_eig": float(bottom[0]),
            "eig_converged": bool(info.converged),
        }
    return record, run["models"], (Xe, ye)


def hvp_relative_error(
    model: nn.Module, X: torch.Tensor, y: torch.Tensor, eps: float = 1e-2, seed: int = 0
) -> float:
    """|H v - central difference of gradients| / |H v| for a random unit v (all
    weights, cross-entropy)."""
    names = [name for name, _ in model.named_parameters()]
    params = list(model.parameters())
    v = torch.randn(
        sum(p.numel() for p in params), generator=torch.Generator().manual_seed(seed)
    ).to(params[0])
    v = v / torch.linalg.vector_norm(v)
    Hv = hvp(model, X, y, names, v, loss_fn=F.cross_entropy)
    base = torch.nn.utils.parameters_to_vector(params).detach().clone()
    grads = []
    for sign in (1.0, -1.0):
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(base + sign * eps * v, params)
        loss = F.cross_entropy(model(X), y)
        grads.append(
            torch.nn.utils.parameters_to_vector(torch.autograd.grad(loss, params))
        )
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(base, params)
    fd = (grads[0] - grads[1]) / (2 * eps)
    return float(torch.linalg.vector_norm(Hv - fd) / torch.linalg.vector_norm(Hv))


def measure_values(record: Mapping[str, Any], kernel: str, measure: str) -> np.ndarray:
    """One roughness measure over the direction pairs: (r,)."""
    return np.array(
        [r[measure] for r in record["kernels"][kernel]["roughness"]], dtype=float
    )


def medians(
    records: Mapping[str, Mapping[str, Any]],
    view: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict[tuple[str, str], tuple[float, float]]:
    """{(task, measure): (Softmax value, Gaussian value)}: medians over the
    direction pairs of the three measures, and "top_eig" (lambda_max). ``view``:
    recompute the measures on
    ``view(Z)`` of every grid Z (float64), e.g. its central part ``lambda Z: Z[2:-2,
    2:-2]``.
    """
    out = {}
    for task, rec in records.items():
        for m in MEASURES:
            if view is None:
                values = [measure_values(rec, k, m) for k in KERNELS]
            else:
                values = [
                    [
                        roughness(view(np.asarray(Z, dtype=np.float64)))[m]
                        for Z in rec["kernels"][k]["Z"]
                    ]
                    for k in KERNELS
                ]
            out[task, m] = tuple(float(np.median(v)) for v in values)
        out[task, "top_eig"] = tuple(
            float(rec["kernels"][k]["top_eig"]) for k in KERNELS
        )
    return out


def _fmt(values: np.ndarray) -> str:
    return f"{np.median(values):.3g} [{values.min():.3g}, {values.max():.3g}]"


def comparison_table(
    records: Mapping[str, Mapping[str, Any]], task_labels: Mapping[str, str]
) -> Table:
    """One column per (task, kernel); rows: test accuracy, loss at the centre, the
    three measures (median [min, max] over direction pairs), lambda_max and
    lambda_min."""
    cols = [(t, k) for t in records for k in KERNELS]
    rows = [
        ["test accuracy"]
        + [
            f"{records[t]['kernels'][k]['history']['test_acc'][-1]:.3f}"
            for t, k in cols
        ],
        ["loss at the centre"]
        + [f"{records[t]['kernels'][k]['center_loss']:.3f}" for t, k in cols],
    ]
    rows += [
        [label] + [_fmt(measure_values(records[t], k, m)) for t, k in cols]
        for m, label in MEASURES.items()
    ]
    rows += [
        [name] + [f"{records[t]['kernels'][k][key]:.3g}" for t, k in cols]
        for key, name in (("top_eig", "lambda_max"), ("bottom_eig", "lambda_min"))
    ]
    header = [""] + [
        f"{task_labels[t].split()[0]}, {KERNEL_LABELS[k]}" for t, k in cols
    ]
    return Table(header, rows)


def plot_slices(record: Mapping[str, Any], title: str):
    """Filled contours of every slice: one row per kernel, one column per direction
    pair."""
    seeds = len(record["kernels"]["softmax"]["Z"])
    fig, axes = new_figure(ncols=seeds, nrows=2, width=3.0, height=2.6, squeeze=False)
    for row, k in enumerate(KERNELS):
        alphas = np.asarray(record["kernels"][k]["alphas"])
        for col in range(seeds):
            ax, Z = axes[row, col], np.asarray(record["kernels"][k]["Z"][col])
            levels = (
                Z.min() + (Z.max() - Z.min()) * np.linspace(0, 1, 13) ** 2
            )  # denser near the minimum
            filled = ax.contourf(alphas, alphas, Z.T, levels=levels, cmap="viridis")
            ax.contour(
                alphas,
                alphas,
                Z.T,
                levels=filled.levels,
                colors="white",
                linewidths=0.4,
            )
            ax.plot(0, 0, "+", color="white", ms=8)
            fig.colorbar(filled, ax=ax, fraction=0.046, pad=0.03, format="%.2f")
            ax.set_title(
                f"{KERNEL_LABELS[k]}, directions r={col}",
                color=KERNEL_COLORS[k],
                fontsize=9,
            )
            ax.grid(False)
            ax.set_xlabel(r"$\alpha$" if row == 1 else "")
            ax.set_ylabel(r"$\beta$" if col == 0 else "")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_measures(
    records: Mapping[str, Mapping[str, Any]], title: str, task_labels: Mapping[str, str]
):
    """The three measures, one dot per direction pair, a bar at the median; per task
    and kernel."""
    fig, axes = new_figure(ncols=3, width=3.4, height=2.9)
    for ax, (m, label) in zip(axes, MEASURES.items()):
        for t, (task, rec) in enumerate(records.items()):
            for j, k in enumerate(KERNELS):
                x = 3 * t + j
                values = measure_values(rec, k, m)
                jitter = np.linspace(-0.15, 0.15, len(values))
                ax.scatter(
                    x + jitter,
                    values,
                    color=KERNEL_COLORS[k],
                    s=18,
                    alpha=0.8,
                    label=KERNEL_LABELS[k] if t == 0 else None,
                )
                ax.hlines(
                    np.median(values), x - 0.3, x + 0.3, color=KERNEL_COLORS[k], lw=2
                )
        ax.set_xticks(
            [0.5 + 3 * t for t in range(len(records))],
            [task_labels[t].split()[0] for t in records],
        )
        ax.set_title(label, fontsize=10)
        ax.set_xlim(-0.8, 3 * len(records) - 1.2)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def jsonable(x: Any) -> Any:
    """Nested dicts/lists with numpy arrays as float32 lists and numpy scalars as
    Python numbers."""
    if isinstance(x, dict):
        return {key: jsonable(value) for key, value in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(value) for value in x]
    if isinstance(x, np.ndarray):
        return np.asarray(x, dtype=np.float32).tolist()
    return x.item() if isinstance(x, np.generic) else x


def describe(record: Mapping[str, Any]) -> str:
    """The test accuracies after stage 1 and after each second stage, and the loss
    on E at each stage-2 solution, as text."""
    lines = [
        f"test accuracy after stage 1 (Softmax): {record['stage1']['test_acc'][-1]:.3f}"
    ]
    for k in KERNELS:
        r = record["kernels"][k]
        lines.append(
            f"after stage 2 with {KERNEL_LABELS[k]:8s}: test accuracy"
            f" {r['history']['test_acc'][-1]:.3f}, loss on E at the centre"
            f" {r['center_loss']:.3f}"
        )
    return "\n".join(lines)


# --- checks and printed comparisons of records (chapter 09) ------------------------


def check_slices(
    records: Mapping[str, Mapping[str, Any]],
    land: Mapping[str, Any],
    task_labels: Mapping[str, str],
    *,
    tol: float = 1e-6,
) -> str:
    """Check every slice of ``records`` ({task: record of ``landscape_study``}, live or
    read back from JSON) made with the landscape settings ``land``; return a report.

    Checks: 0 < share of label 1 in the test set < 1 and num_weights > 0; every grid
    stack Z: (len(direction_seeds), grid, grid), finite, equal to the loss at the
    centre exactly at its centre point; Lanczos converged with lambda_max > 0; the
    stored roughness equals ``roughness(Z)`` recomputed (counts exactly, the other
    measures within ``tol``). Raises ValueError naming the task and kernel.
    """
    shape = (len(land["direction_seeds"]), land["grid"], land["grid"])
    centre, worst, lines = land["grid"] // 2, 0.0, []
    for task, rec in records.items():
        if not (0 < rec["test_label_fraction"] < 1 and rec["num_weights"] > 0):
            raise ValueError(
                f"{task}: test label fraction outside (0, 1) or no weights")
        for k, r in rec["kernels"].items():
            where = f"{task}, {k}"
            Z = np.asarray(r["Z"], dtype=np.float64)
            if Z.shape != shape or not np.isfinite(Z).all():
                raise ValueError(f"{where}: grids must be finite of shape {shape}, "
                                 f"got shape {Z.shape}")
            gap = float(np.abs(Z[:, centre, centre] - r["center_loss"]).max())
            if gap != 0.0:
                raise ValueError(
                    f"{where}: |centre - L(theta)| = {gap:.1e}, expected 0")
            if not (r["eig_converged"] and r["top_eig"] > 0):
                raise ValueError(f"{where}: Lanczos did not converge to lambda_max > 0")
            for again, stored in zip(map(roughness, Z), r["roughness"], strict=True):
                if again["num_local_minima"] != stored["num_local_minima"]:
                    raise ValueError(f"{where}: stored count of local minima differs")
                worst = max(worst, *(abs(again[m] - stored[m]) for m in MEASURES))
            lines.append(
                f"{task_labels[task]}, {KERNEL_LABELS[k]}: {shape[0]} finite "
                f"{shape[1]}x{shape[2]} grids, |centre - L(theta)| = {gap:.0e} "
                f"(tolerance 0);\n    Lanczos converged: lambda_max = "
                f"{r['top_eig']:.3g}, lambda_min = {r['bottom_eig']:.3g}"
            )
    if worst >= tol:
        raise ValueError(f"stored roughness differs from the grids' by {worst:.1e}")
    lines.append(f"roughness recomputed from the grids: max |difference| = "
                 f"{worst:.1e} (tolerance {tol:g})")
    return "\n".join(lines)


def _ordering(s: float, g: float) -> str:
    return "lower" if g < s else ("equal" if g == s else "higher")


def median_verdicts(
    meds: Mapping[tuple[str, str], tuple[float, float]], task_labels: Mapping[str, str]
) -> str:
    """One line per (task, measure) of ``medians(...)``: the Softmax and Gaussian
    values and whether the Gaussian one is lower, equal or higher."""
    return "\n".join(
        f"{task_labels[task].split()[0]:10s} {MEASURES.get(m, 'lambda_max'):17s}:"
        f" Softmax {s:7.3g}, Gaussian {g:7.3g} -> Gaussian {_ordering(s, g)}"
        for (task, m), (s, g) in meds.items()
    )


def compare_medians(
    first: Mapping[tuple[str, str], Sequence[float]],
    second: Mapping[tuple[str, str], Sequence[float]],
    task_labels: Mapping[str, str],
    names: tuple[str, str],
) -> str:
    """Two ``medians(...)`` results side by side for the three roughness measures:
    Softmax / Gaussian of each, and whether the Gaussian-vs-Softmax ordering is the
    same in both. ``second`` must hold every (task, measure) of ``first``."""
    lines = [f"medians, Softmax / Gaussian: {names[0]} | {names[1]}"]
    for (task, m), (s1, g1) in first.items():
        if m in MEASURES:
            s2, g2 = second[task, m]
            same = "same" if _ordering(s1, g1) == _ordering(s2, g2) else "different"
            lines.append(
                f"{task_labels[task].split()[0]:10s} {MEASURES[m]:17s}: {s1:6.3g} / "
                f"{g1:<6.3g} | {s2:6.3g} / {g2:<6.3g} ({same} ordering)"
            )
    return "\n".join(lines)
