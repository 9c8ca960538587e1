"""Tests of lib.outcomes (budget-independent labels) and lib.kernel_study (paired
teacher problems,
the convex-hull certificate)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lib.batched import BatchedAttentionLayer
from lib.data import batched_teacher_problems as teacher_problems
from lib.kernel_study import (
    extend_descending,
    format_outcome_table,
    hull_distance,
    outcome_summary,
    softmax_loss_bound,
)
from lib.outcomes import (
    classify_outcomes,
    gauss_newton_curvature,
    hessian_check,
    monotone_descent,
    run_to_outcome,
    saturation,
)


def test_classify_rule():
    f0 = np.ones(4)
    tail = np.array([[1e-12, 0.5, 0.3, 0.2], [1e-13, 0.5, 0.3, 0.1]])
    sat = np.array([0.5, 0.5, 1e-5, 0.5])
    label, decrease, left, rate = classify_outcomes(f0, tail, sat)
    assert label.tolist() == [
        "reached",
        "stalled-finite",
        "stalled-infinity",
        "descending",
    ]
    assert decrease[3] == pytest.approx(0.5) and left[0] == 0.0
    assert left[3] == pytest.approx(9.0) and rate[3] == pytest.approx(
        1000 * math.log10(2)
    )
    with pytest.raises(ValueError, match="loss_tail"):
        classify_outcomes(f0, tail[:1], sat)


def test_continuation_is_monotone_and_reaches_wide_softmax():
    student, _, X, Y = teacher_problems("softmax", 1, 3, 4, ("W_Q",), 4, device="cpu")
    curvature = gauss_newton_curvature(student, X, Y, ("W_Q",))
    assert curvature.shape == (4,) and (curvature > 0).all()
    out = monotone_descent(student, X, Y, ("W_Q",), iterations=30)
    assert (np.diff(out["loss"], axis=0) <= 0).all()
    assert (out["loss"][-1] <= 1e-10 * out["loss"][0]).all()


def test_run_to_outcome_labels_a_trap_and_checks_its_hessian():
    # At the teacher's weights with a perturbed target the loss has a finite
    # positive minimum
    # nearby (W_V-only reachable set is not the target), so the run stalls at
    # finite weights.
    student, teacher, X, Y = teacher_problems(
        "softmax", 1, 2, 1, ("W_Q",), 2, device="cpu"
    )
    Y = Y + 0.3
    outcome = run_to_outcome(student, X, Y, ("W_Q",), gd_steps=50, iterations=40)
    assert set(outcome.label) <= {
        "stalled-finite",
        "stalled-infinity",
        "reached",
        "descending",
    }
    for m in np.flatnonzero(outcome.label == "stalled-finite"):
        assert outcome.hessian_kind[m] in ("local min", "saddle", "flat")
    kinds = hessian_check(student, X, Y, ("W_Q",), [0])
    assert kinds[0][0] in ("local min", "saddle", "flat")
    with pytest.raises(ValueError, match="iterations"):
        run_to_outcome(student, X, Y, ("W_Q",), gd_steps=1, iterations=4)


def test_saturation_measures():
    model = BatchedAttentionLayer(2, 3, kernel="softmax", seeds=[0, 1], device="cpu")
    X = torch.randn(2, 3, 3, dtype=torch.float64)
    with torch.no_grad():
        model.W_Q.mul_(1e3)
    assert saturation(model, X).min() < 1e-6
    model.set_kernel("gaussian")
    assert (
        saturation(model, X).min() < 1e-6
    )  # far queries: every entry of some row vanishes


def test_extend_descending_and_summary():
    student, _, X, Y = teacher_problems("gaussian", 1, 3, 4, ("W_Q",), 3, device="cpu")
    outcome = run_to_outcome(student, X, Y, ("W_Q",), gd_steps=5, iterations=8)
    outcome.label[:] = "descending"
    longer = extend_descending(outcome, "gaussian", None, 1, 3, 4, iterations=40)
    assert (longer.f_end <= outcome.f_end + 1e-15).all()
    assert (outcome.label == "descending").all()  # the original is not modified
    summary = outcome_summary({"softmax": longer, "gaussian": outcome})
    assert (
        summary["gaussian"]["paired"]["only_this"] == 0 and summary["softmax"]["M"] == 3
    )


def test_hull_distance():
    P = np.eye(3)
    assert hull_distance(P, np.array([0.2, 0.3, 0.5])) == pytest.approx(0.0, abs=1e-24)
    assert hull_distance(P, np.zeros(3)) == pytest.approx(
        1 / 3
    )  # nearest point: the centroid
    assert hull_distance(P, np.array([2.0, 0, 0])) == pytest.approx(
        1.0
    )  # nearest: vertex e_1
    rng = np.random.default_rng(0)
    Q, y = rng.normal(size=(4, 6)), rng.normal(size=6)
    samples = rng.dirichlet(np.ones(4), size=20000) @ Q
    assert hull_distance(Q, y) <= ((samples - y) ** 2).sum(1).min() + 1e-12
    with pytest.raises(ValueError, match="points"):
        hull_distance(np.ones((11, 2)), np.ones(2))


def test_mirror_example_closed_form_and_trap():
    from lib.mirror_example import (
        T_STAR,
        check_point,
        example_inputs,
        example_layer,
        example_targets,
        phi,
        row_out,
        run_example,
        stationary_points,
    )
    from lib.model import squared_loss

    t = np.linspace(-3, 3, 7)
    x = (2 * np.cosh(t) - 1) / (2 * np.cosh(t) + 1)
    assert np.abs(row_out("softmax", t)[:, 0] - x).max() < 1e-14
    X = example_inputs("cpu")
    for kernel in ("softmax", "gaussian"):
        w = [-1.0, 0.3, 2.0]
        with torch.no_grad():
            loss = squared_loss(
                example_layer(kernel, w, device="cpu")(X),
                example_targets(kernel, device="cpu"),
            ).item()
        assert abs(loss - phi(kernel, np.array(w)).sum()) < 1e-14
        trap = stationary_points(kernel)[0]
        f, g, eig = check_point(kernel, trap, device="cpu")
        assert trap < 0 and f > 0.01 and g < 1e-10 and eig.min() > 0
    w_end, history = run_example("softmax", steps=300, device="cpu")
    assert abs(w_end[2] - T_STAR) < 1e-6 and len(history.diagnostics["w1"]) > 10


def test_certificates_match_autograd_jacobian_and_bound():
    from torch.func import jacrev

    from lib.attention import default_gamma, get_kernel
    from lib.certificates import model_certificates, row_certificates

    gen = torch.Generator().manual_seed(0)
    n, d = 4, 4
    K = torch.randn(n, d, generator=gen, dtype=torch.float64)
    q = torch.randn(1, d, generator=gen, dtype=torch.float64)
    for kernel in ("softmax", "gaussian"):
        fn = get_kernel(kernel)
        row = (
            (lambda q: fn(q.expand(n, d), K)[0])
            if kernel == "softmax"
            else (lambda q: fn(q.expand(n, d), K, gamma=None)[0])
        )
        J = jacrev(row)(q).reshape(n, d)
        sv = torch.linalg.svdvals(J)
        c = row_certificates(
            q.expand(n, d),
            K,
            (
                fn(q.expand(n, d), K)
                if kernel == "softmax"
                else fn(q.expand(n, d), K, gamma=default_gamma(d))
            ),
            kernel,
        )[0]
        expected = (
            math.sqrt(2) * sv[n - 2]
            if kernel == "softmax"
            else 2 / math.sqrt(n) * sv[-1]
        )
        assert abs(c - expected) < 1e-12
        # the theorem's inequality on a wide problem
        student, _, X, Y = teacher_problems(kernel, 1, 3, 4, ("W_Q",), 3, device="cpu")
        loss = 0.5 * ((student(X) - Y) ** 2).sum(dim=(1, 2, 3))
        grad = torch.autograd.grad(loss.sum(), student.W_Q)[0].flatten(1).norm(dim=1)
        sigma = torch.linalg.svdvals(X.reshape(3, 3, 4))[:, -1]
        cert = model_certificates(student, X)
        assert (grad >= sigma * cert * loss / math.sqrt(3) * (1 - 1e-9)).all()


def test_softmax_loss_bound_and_table():
    rng = np.random.default_rng(1)
    V = rng.normal(size=(2, 1, 3, 4))
    inside = (rng.dirichlet(np.ones(3), size=(2, 1, 3))[..., None] * V[:, :, None]).sum(
        -2
    )
    assert np.abs(softmax_loss_bound(V, inside)).max() < 1e-20
    assert (softmax_loss_bound(V, inside + 5.0) > 1.0).all()
    with pytest.raises(ValueError, match="shape"):
        softmax_loss_bound(V, inside[0])
    student, _, X, Y = teacher_problems("softmax", 1, 3, 4, ("W_Q",), 2, device="cpu")
    o = run_to_outcome(
        student, X, Y, ("W_Q",), gd_steps=5, iterations=8, check_hessian=False
    )
    text = format_outcome_table({"softmax": o, "other": o})
    assert "stalled-infinity" in text and "p = 1" in text


def test_format_record_table():
    from lib.kernel_study import format_record_table

    cell = {
        "N": 2,
        "D": 16,
        "M": 5,
        "scale": 1.0,
        "trainable": ["W_Q"],
        "budget_x10": {
            "softmax": {"counts": {"reached": 5, "stalled-finite": 0}},
            "gaussian": {
                "counts": {"reached": 3},
                "paired": {"only_reference": 2, "only_this": 0, "p_value": 0.5},
            },
        },
    }
    text = format_record_table({"cells": [cell]}, ["softmax", "gaussian"])
    assert "5 / 3" in text and "2/0, p = 0.5" in text


def test_cross_kernel_fit_and_trapped_problems():
    from lib.kernel_study import cross_kernel_fit, trapped_softmax_problems

    fits = cross_kernel_fit(1, 2, 2, 2, iterations=8, device="cpu")
    assert fits["softmax"].shape == fits["bound"].shape == (2,)
    assert (fits["softmax"] >= fits["bound"] * (1 - 1e-6)).all()  # the bound is a bound
    with pytest.raises(ValueError, match="no such problem"):
        trapped_softmax_problems(1, 2, 4, ("W_Q",), 2, device="cpu")  # wide: no trap


def test_wide_inequality_ratios_hold_and_consume_the_generator():
    from lib.certificates import wide_inequality_ratios

    gen = torch.Generator().manual_seed(0)
    ratios, c_min = wide_inequality_ratios(
        ("softmax", "gaussian"), [(1, 3, 4)], (0.5, 2.0), 3, gen, "cpu"
    )
    assert len(ratios) == 2 * 1 * 2 * 3 and min(ratios) >= 1 - 1e-9 and c_min > 0
    again = wide_inequality_ratios(("softmax",), [(1, 3, 4)], (0.5,), 3,
                                   torch.Generator().manual_seed(0), "cpu")
    assert again[0] == pytest.approx(ratios[:3], rel=1e-12)
    only_gaussian = wide_inequality_ratios(("gaussian",), [(1, 3, 4)], (1.0,), 2,
                                           torch.Generator().manual_seed(0), "cpu")
    assert only_gaussian[1] == math.inf
    with pytest.raises(ValueError, match="kernel"):
        wide_inequality_ratios(("relu",), [(1, 3, 4)], (1.0,), 2, gen, "cpu")


def _recorded_cell(N, n, D, scale, trainable, labels, gauss_extra=None):
    counts = {k: {label: labels[k].count(label) for label in
                  ("reached", "stalled-finite", "stalled-infinity", "descending")}
              for k in labels}
    entry = lambda k: {  # noqa: E731
        "counts": counts[k],
        "hessian_kinds": {"local min": counts[k]["stalled-finite"]},
        "paired": {"only_reference": 1, "only_this": 0, "p_value": 1.0},
    }
    cell = {"N": N, "n": n, "D": D, "M": len(labels["softmax"]), "scale": scale,
            "trainable": trainable, "labels_x10": labels,
            "budget_x10": {k: entry(k) for k in labels}}
    if gauss_extra:
        cell["budget_x10"]["g"]["paired"] = gauss_extra
    return cell


def test_record_findings_and_same_data_hits():
    from lib.kernel_study import record_findings, same_data_hits

    wide = _recorded_cell(2, 4, 16, 2.0, ["W_Q"], {
        "softmax": ["reached"] * 3, "g": ["stalled-infinity", "reached", "reached"]})
    narrow = _recorded_cell(2, 3, 2, 1.0, ["W_Q"], {
        "softmax": ["stalled-finite", "reached", "stalled-infinity"],
        "g": ["reached", "stalled-finite", "reached"]})
    found = record_findings({"cells": [wide, narrow]}, ["g"])
    assert found["wide"] == [wide] and found["narrow"] == [narrow]
    assert found["gaussian_better"] == [False, False]
    assert found["gauss_traps"] == 1 and found["soft_trapped"] == 1
    assert found["at_infinity"] == {"g": 1}
    better = {"only_reference": 0, "only_this": 9, "p_value": 0.004}
    narrow_better = _recorded_cell(2, 3, 2, 1.0, ["W_Q"], narrow["labels_x10"], better)
    assert record_findings({"cells": [narrow_better]}, ["g"])["gaussian_better"] == [
        True]
    hits = same_data_hits({"cells": [wide, narrow]}, ["g"])
    assert hits == {"pairs": 6, "wide": 0, "wide_pairs": 3,
                    "narrow": {(2, 2, "W_Q", 1.0, "g"): [0, 2]}}


def test_plot_outcome_counts():
    import matplotlib

    matplotlib.use("Agg")
    from lib.kernel_study import plot_outcome_counts

    student, _, X, Y = teacher_problems("softmax", 1, 3, 4, ("W_Q",), 2, device="cpu")
    o = run_to_outcome(student, X, Y, ("W_Q",), gd_steps=5, iterations=8,
                       check_hessian=False)
    fig = plot_outcome_counts({"budget": {"softmax": o, "other": o}})
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert sum(heights) == 2 * 2  # two bars, each stacking the two problems
    assert fig.axes[0].get_title() == "wide problems, budget"
    with pytest.raises(ValueError, match="panels"):
        plot_outcome_counts({})
