"""The paired kernel comparison of the attention-only chapter: random teacher problems,
both kernels on the same random numbers, budget-independent outcomes, and the
convex-hull certificate.

The problems are ``lib.data.batched_teacher_problems``: targets from a teacher that
differs from the student only in the trained attention weights (global minimum 0), with
the same inputs, W_K, W_V and starting point for every kernel, so kernels are compared
on the same random numbers.

* ``kernel_outcomes``: ``lib.outcomes.run_to_outcome`` on the problems of several
  kernel variants; ``extend_descending`` continues the runs still descending with a
  larger budget and relabels them.
* ``hull_distance``: the exact squared distance from a point to the convex hull of a
  few points, a lower bound on what any row-stochastic (Softmax) attention row can fit.
* ``softmax_loss_bound``: that bound summed over all rows, for whole problems.
* ``outcome_summary`` / ``format_outcome_table``: the counts and paired tables of a
  study, as JSON (for recorded runs) or as text.
"""

from __future__ import annotations

import itertools
from typing import Mapping, Sequence

import numpy as np
import torch

from .attention import default_gamma
from .batched import BatchedAttentionLayer
from .data import batched_teacher_problems
from .hessian import full_hessian
from .model import squared_loss
from .outcomes import (
    LABELS,
    Outcome,
    classify_outcomes,
    hessian_check,
    monotone_descent,
    run_to_outcome,
    saturation,
)
from .stats import paired_table, wilson_interval

__all__ = [
    "kernel_outcomes",
    "extend_descending",
    "hull_distance",
    "softmax_loss_bound",
    "outcome_summary",
    "format_outcome_table",
    "format_record_table",
    "cross_kernel_fit",
    "trapped_softmax_problems",
    "OUTCOME_COLORS",
    "plot_outcome_counts",
    "record_findings",
    "same_data_hits",
]


def kernel_outcomes(
    variants: Mapping[str, tuple[str, float | None]],
    N: int,
    n: int,
    D: int,
    M: int,
    *,
    trainable: Sequence[str] = ("W_Q",),
    init_scale: float = 1.0,
    gd_steps: int = 200,
    iterations: int = 40,
) -> dict[str, Outcome]:
    """{variant: Outcome} for variants {name: (kernel, gamma)}, same M problems."""
    out = {}
    for name, (kernel, gamma) in variants.items():
        student, _, X, Y = batched_teacher_problems(
            kernel, N, n, D, trainable, M, gamma=gamma, init_scale=init_scale
        )
        out[name] = run_to_outcome(
            student, X, Y, trainable, gd_steps=gd_steps, iterations=iterations
        )
    return out


def extend_descending(
    outcome: Outcome,
    kernel: str,
    gamma: float | None,
    N: int,
    n: int,
    D: int,
    *,
    trainable: Sequence[str] = ("W_Q",),
    init_scale: float = 1.0,
    iterations: int = 400,
) -> Outcome:
    """A copy of ``outcome`` in which the runs labelled "descending" were continued for
    ``iterations`` more steps of ``monotone_descent`` from their final weights and
    relabelled
    (the problems are rebuilt with ``teacher_problems``)."""
    idx = np.flatnonzero(outcome.label == "descending")
    new = Outcome(
        **{
            k: (v.copy() if isinstance(v, np.ndarray) else dict(v))
            for k, v in vars(outcome).items()
        }
    )
    if idx.size == 0:
        return new
    student, _, X, Y = batched_teacher_problems(
        kernel,
        N,
        n,
        D,
        trainable,
        len(outcome.label),
        gamma=gamma,
        init_scale=init_scale,
    )
    sub = BatchedAttentionLayer.from_layers([student.layer(int(m)) for m in idx])
    with torch.no_grad():
        for name in trainable:
            getattr(sub, name).copy_(outcome.weights[name][idx])
    cont = monotone_descent(sub, X[idx], Y[idx], trainable, iterations=iterations)
    label, decrease, left, rate = classify_outcomes(
        outcome.f0[idx], cont["loss"][-(iterations // 4 + 1) :], saturation(sub, X[idx])
    )
    for key, value in (
        ("label", label),
        ("decrease", decrease),
        ("decades_left", left),
        ("rate", rate),
        ("f_end", cont["loss"][-1]),
        ("grad_end", cont["grad"]),
        ("saturation", saturation(sub, X[idx])),
    ):
        getattr(new, key)[idx] = value
    for name in trainable:
        new.weights[name] = outcome.weights[name].clone()
        new.weights[name][idx] = getattr(sub, name).detach()
    stalled = np.flatnonzero(label == "stalled-finite")
    for j, (kind, _, _) in hessian_check(
        sub, X[idx], Y[idx], trainable, stalled
    ).items():
        new.hessian_kind[idx[j]] = kind
    new.hessian_kind[idx[label != "stalled-finite"]] = ""
    return new


def hull_distance(points: np.ndarray, y: np.ndarray) -> float:
    """Exact min over the simplex of ||points^T p - y||^2. points: (n, k) rows, y: (k,).

    Enumerates the faces of the simplex (n <= 10): on each face, the
    equality-constrained least squares problem is solved exactly; the best feasible one
    is the answer (the optimum of a convex problem lies in the relative interior of some
    face, where it solves that face's problem).
    """
    P, y = np.asarray(points, dtype=float), np.asarray(y, dtype=float)
    if P.ndim != 2 or y.shape != (P.shape[1],) or not 1 <= P.shape[0] <= 10:
        raise ValueError(
            f"need points (n <= 10, k) and y (k,), got {P.shape} and {y.shape}"
        )
    best = np.inf
    for size in range(1, P.shape[0] + 1):
        for face in itertools.combinations(range(P.shape[0]), size):
            F = P[list(face)]
            # p = e_0 + A c with the columns of A spanning {sum p = 0} on the face
            A = (
                np.vstack([-np.ones((1, size - 1)), np.eye(size - 1)])
                if size > 1
                else np.zeros((1, 0))
            )
            base = F[0]
            c = (
                np.linalg.lstsq((A.T @ F).T, y - base, rcond=None)[0]
                if size > 1
                else np.zeros(0)
            )
            p = np.eye(size)[0] + A @ c
            if (p >= -1e-12).all():
                best = min(best, float(((F.T @ p - y) ** 2).sum()))
    return best


def outcome_summary(
    outcomes: Mapping[str, Outcome], reference: str = "softmax"
) -> dict:
    """JSON-ready {variant: {counts, reached, wilson, paired vs reference}}."""
    ref = outcomes[reference].label == "reached"
    summary = {}
    for name, o in outcomes.items():
        reached = o.label == "reached"
        entry = {
            "counts": o.counts(),
            "M": int(reached.size),
            "wilson": list(wilson_interval(int(reached.sum()), reached.size)),
            "hessian_kinds": {
                k: int((o.hessian_kind == k).sum())
                for k in ("local min", "saddle", "flat")
            },
        }
        if name != reference:
            t = paired_table(ref, reached)
            entry["paired"] = {
                "only_reference": t.only_a,
                "only_this": t.only_b,
                "both": t.both,
                "neither": t.neither,
                "p_value": t.p_value,
            }
        summary[name] = entry
    assert set(LABELS) >= set().union(*(s["counts"] for s in summary.values()))
    return summary


def softmax_loss_bound(V: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Lower bound on the loss f = 1/(2N) sum ||MH(X_i) - Y_i||^2 of every Softmax
    attention (any W_Q, W_K) with fixed values V_i = X_i W_V W_O: 1/(2N) sum_{i,k}
    dist(y_ik, conv(rows of V_i))^2.
    V: (M, N, n, d_out), Y: (M, N, n, d_out) -> (M,)."""
    V, Y = np.asarray(V, dtype=float), np.asarray(Y, dtype=float)
    if V.ndim != 4 or V.shape != Y.shape:
        raise ValueError(
            f"V and Y must both have shape (M, N, n, d_out), got {V.shape}, {Y.shape}"
        )
    M, N, n, _ = V.shape
    return np.array(
        [
            sum(hull_distance(V[m, i], Y[m, i, k]) for i in range(N) for k in range(n))
            for m in range(M)
        ]
    ) / (2 * N)


def format_outcome_table(
    outcomes: Mapping[str, Outcome], reference: str = "softmax"
) -> str:
    """A text table: label counts per variant, Wilson interval of the reached rate, and
    the paired table against ``reference`` (only reference / only this / both / neither,
    exact McNemar p).
    """
    lines = [
        f"{'kernel':22s} "
        + " ".join(f"{label:>16s}" for label in LABELS)
        + "   reached [95% CI]   paired: only ref. / only this / both / neither, p"
    ]
    ref = outcomes[reference].label == "reached"
    for name, o in outcomes.items():
        ok = o.label == "reached"
        lo, hi = wilson_interval(int(ok.sum()), ok.size)
        row = f"{name:22s} " + " ".join(f"{o.counts()[label]:16d}" for label in LABELS)
        row += f"   [{lo:.2f}, {hi:.2f}]"
        if name != reference:
            t = paired_table(ref, ok)
            row += (
                f"   {t.only_a} / {t.only_b} / {t.both} / {t.neither}, p = "
                f"{t.p_value:.2g}"
            )
        lines.append(row)
    return "\n".join(lines)


def format_record_table(record: Mapping, variants: Sequence[str]) -> str:
    """One line per cell of a recorded study (``scripts/record_attention_only.py``):
    sizes, scale, number of problems, reached after the longer budget per variant, the
    paired counts only-reference / only-this with the McNemar p of every other variant,
    and the
    number of reference runs stalled at finite weights."""
    lines = [
        f"{'N':>2s} {'D':>3s} {'trains':9s} {'scale':>5s} {'M':>4s}  reached ("
        + " / ".join(variants)
        + ");\n"
        + f"{'':28s}paired only-{variants[0]} / only-other, p; "
        + f"{variants[0]} stalled finite"
    ]
    for c in record["cells"]:
        s = c["budget_x10"]
        pairs = "; ".join(
            f"{s[g]['paired']['only_reference']}/{s[g]['paired']['only_this']}, "
            f"p = {s[g]['paired']['p_value']:.1g}"
            for g in variants[1:]
        )
        lines.append(
            f"{c['N']:2d} {c['D']:3d} {'+'.join(c['trainable']):9s} {c['scale']:5.2f} "
            f"{c['M']:4d}  "
            + " / ".join(str(s[v]["counts"]["reached"]) for v in variants)
            + f";  {pairs};  {s[variants[0]]['counts']['stalled-finite']}"
        )
    return "\n".join(lines)


def cross_kernel_fit(
    N: int, n: int, D: int, M: int, *, iterations: int = 80, device=None
) -> dict[str, np.ndarray]:
    """Each kernel fitted (W_Q only) to the *other* kernel's teachers on the same M
    problems: {"softmax", "gaussian": (M,) attained f_end / f_0; "bound": (M,) the
    Softmax certificate ``softmax_loss_bound`` / f_0 (a lower bound for every Softmax
    attention); "labels_<kernel>": outcome counts}."""
    out: dict = {}
    for fit, target in (("softmax", "gaussian"), ("gaussian", "softmax")):
        student, _, X, _ = batched_teacher_problems(
            fit, N, n, D, ("W_Q",), M, device=device
        )
        Y = batched_teacher_problems(target, N, n, D, ("W_Q",), M, device=device).Y
        o = run_to_outcome(student, X, Y, ("W_Q",), gd_steps=200, iterations=iterations)
        out[fit], out[f"labels_{fit}"] = o.f_end / o.f0, o.counts()
        if fit == "softmax":
            with torch.no_grad():
                V = X @ student.W_V[:, 0].unsqueeze(1) @ student.W_O.unsqueeze(1)
            out["bound"] = softmax_loss_bound(V.cpu().numpy(), Y.cpu().numpy()) / o.f0
    return out


def trapped_softmax_problems(
    N: int, n: int, D: int, trainable: Sequence[str], M: int, *, device=None
) -> dict:
    """Search M problems (``batched_teacher_problems``; its inputs depend on M) for
    those on which the Softmax run stalls at finite weights while the Gaussian run
    (bandwidth 1/(2 sqrt d), same inputs and start) reaches zero; then check the first
    one.

    Returns {"hits": indices, "m": the first, "loss", "grad_norm": at the Softmax end
    point, "eig": its Hessian eigenvalues (ascending) in ``trainable``, "alone": the
    label
    of the same problem trained on its own (other rounding)}. ValueError if none."""
    trainable = tuple(trainable)
    runs, problems = {}, {}
    for kernel, gamma in (("softmax", None), ("gaussian", default_gamma(D))):
        problems[kernel] = batched_teacher_problems(
            kernel, N, n, D, trainable, M, gamma=gamma, device=device
        )
        student, _, X, Y = problems[kernel]
        first = run_to_outcome(student, X, Y, trainable, gd_steps=200, iterations=40)
        runs[kernel] = extend_descending(
            first, kernel, gamma, N, n, D, trainable=trainable, iterations=400
        )
    hits = np.flatnonzero(
        (runs["softmax"].label == "stalled-finite")
        & (runs["gaussian"].label == "reached")
    )
    if hits.size == 0:
        raise ValueError(f"no such problem among the {M} problems")
    m = int(hits[0])
    _, _, X, Y = problems["softmax"]
    fresh = batched_teacher_problems("softmax", N, n, D, trainable, M, device=device)
    layer = fresh.student.layer(m)
    alone = run_to_outcome(
        BatchedAttentionLayer.from_layers([layer]),
        X[m : m + 1],
        Y[m : m + 1],
        trainable,
        gd_steps=200,
        iterations=440,
    ).label[0]
    with torch.no_grad():
        for k in trainable:
            getattr(layer, k).copy_(runs["softmax"].weights[k][m])
    loss = squared_loss(layer(X[m]), Y[m])
    grads = torch.autograd.grad(loss, [getattr(layer, k) for k in trainable])
    eig = torch.linalg.eigvalsh(full_hessian(layer, X[m], Y[m], trainable))
    return {
        "hits": hits,
        "m": m,
        "loss": loss.item(),
        "alone": str(alone),
        "grad_norm": float(torch.cat([g.flatten() for g in grads]).norm()),
        "eig": eig.cpu().numpy(),
    }


# --- the chapter's figure and the summaries of the recorded study ---

OUTCOME_COLORS = {
    "reached": "#4d9221",
    "stalled-finite": "#c51b7d",
    "stalled-infinity": "#e9a3c9",
    "descending": "#bdbdbd",
}


def plot_outcome_counts(panels: Mapping[str, Mapping[str, Outcome]]):
    """Stacked bars of the outcome labels, one panel per entry of ``panels``
    ({panel title: {variant: Outcome}}), one bar per variant. Returns the figure."""
    from .plotting import new_figure

    if not panels:
        raise ValueError("panels must contain at least one {variant: Outcome} mapping")
    fig, axes = new_figure(len(panels), 1, width=4.6, height=3.2, sharey=True)
    axes = np.atleast_1d(axes)
    for ax, (title, outcomes) in zip(axes, panels.items()):
        bottom = np.zeros(len(outcomes))
        for label in LABELS:
            counts = np.array([o.counts()[label] for o in outcomes.values()])
            ax.bar(range(len(outcomes)), counts, bottom=bottom,
                   color=OUTCOME_COLORS[label], label=label)
            bottom += counts
        ax.set_xticks(range(len(outcomes)),
                      [n.replace(" ", "\n", 1) for n in outcomes])
        ax.set_title(f"wide problems, {title}", fontsize=9)
    axes[0].set_ylabel("number of problems")
    axes[-1].legend(fontsize=7, loc="lower right", frameon=True)
    fig.tight_layout()
    return fig


def _wide(cell: Mapping) -> bool:
    return cell["D"] >= cell["N"] * cell["n"]


def record_findings(record: Mapping, gaussians: Sequence[str]) -> dict:
    """What the chapter reads from the recorded study (after the longer budget).

    record: {"cells": [...]} of ``scripts/record_attention_only.py``; gaussians: the
    Gaussian variants (the reference is "softmax"). Returns {"wide", "narrow": the
    cells with D >= N n and D < N n; "gaussian_better": one bool per (cell, variant),
    True where the variant reached the global minimum significantly more often
    (only_this > only_reference and McNemar p < 0.05); "gauss_traps": Gaussian runs
    stalled at Hessian-checked local minima in the narrow cells; "soft_trapped":
    Softmax runs stalled at finite weights in the narrow cells; "at_infinity":
    {variant: Gaussian runs stalled at infinity} in the wide cell of scale 2}."""
    cells = record["cells"]
    wide = [c for c in cells if _wide(c)]
    narrow = [c for c in cells if not _wide(c)]
    better = []
    for c in cells:
        for g in gaussians:
            paired = c["budget_x10"][g]["paired"]
            better.append(paired["only_this"] > paired["only_reference"]
                          and paired["p_value"] < 0.05)
    big = next((c for c in wide if c["scale"] == 2.0), None)
    return {
        "wide": wide,
        "narrow": narrow,
        "gaussian_better": better,
        "gauss_traps": sum(c["budget_x10"][g]["hessian_kinds"]["local min"]
                           for c in narrow for g in gaussians),
        "soft_trapped": sum(c["budget_x10"]["softmax"]["counts"]["stalled-finite"]
                            for c in narrow),
        "at_infinity": {} if big is None else {
            g: big["budget_x10"][g]["counts"]["stalled-infinity"] for g in gaussians},
    }


def same_data_hits(record: Mapping, gaussians: Sequence[str]) -> dict:
    """The same-data search over a recorded study: problems on which the Softmax run
    stalled (at finite weights or at infinity) and a Gaussian run reached the global
    minimum, after the longer budget.

    Returns {"pairs": number of (problem, Gaussian variant) pairs searched, "wide":
    number of hits in the wide cells (D >= N n), "wide_pairs": pairs searched there,
    "narrow": {(N, D, trainable, scale, variant): problem indices} of the narrow cells
    with at least one hit}."""
    out = {"pairs": 0, "wide": 0, "wide_pairs": 0, "narrow": {}}
    for c in record["cells"]:
        labels = c["labels_x10"]
        for g in gaussians:
            out["pairs"] += c["M"]
            hits = [m for m in range(c["M"])
                    if labels["softmax"][m].startswith("stalled")
                    and labels[g][m] == "reached"]
            if _wide(c):
                out["wide"] += len(hits)
                out["wide_pairs"] += c["M"]
            elif hits:
                key = (c["N"], c["D"], "+".join(c["trainable"]), c["scale"], g)
                out["narrow"][key] = hits
    return out
