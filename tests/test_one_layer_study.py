"""lib.one_layer_study: the chapter-02 problems, sweeps and summaries against direct
computations with lib.trainer and lib.theory."""
import dataclasses
import math
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lib.data import teacher_problem  # noqa: E402
from lib.model import AttentionLayer  # noqa: E402
from lib.one_layer_study import (MATRIX_COLORS, gd_runs, grad_norm_table,  # noqa: E402
                                 linear_rate_check, loss_rises, plot_grad_norms,
                                 plot_relative_losses, plot_value_gaps, run_summary,
                                 step_factor_sweep, summary_table, sweep_table,
                                 teacher_student, train_with_warnings,
                                 value_only_problem, value_only_runs)
from lib.theory import predicted_rate  # noqa: E402
from lib.trainer import History, train  # noqa: E402


def test_teacher_student_is_the_documented_problem():
    prob, student, L_V = teacher_student("gaussian", seed=2)
    ref = teacher_problem(8, 4, 16, kernel="gaussian", H=2, seed=2)
    assert torch.equal(prob.X, ref.X) and torch.equal(prob.Y, ref.Y)
    twin = AttentionLayer(16, H=2, kernel="gaussian", seed=1002)
    assert all(
        torch.equal(p, q) for p, q in zip(student.parameters(), twin.parameters()))
    assert L_V == pytest.approx(predicted_rate(twin, ref.X, lr=1.0).L, rel=1e-12)
    prob, student = value_only_problem("softmax", seed=1)
    assert prob.X.shape == (8, 4, 4) and student.H == 1 and student.init == "orthogonal"


def test_gd_runs_match_train_and_record_warnings():
    (hist,) = gd_runs("softmax", [0], steps=5, factor=0.5)
    prob, student, L_V = teacher_student("softmax", 0)
    ref = train(student, prob.X, prob.Y, steps=5, lr=0.5 / L_V)
    assert hist.loss == pytest.approx(ref.loss, rel=1e-12)
    prob, student, L_V = teacher_student("softmax", 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may leak out
        hist, caught = train_with_warnings(student, prob.X, prob.Y, steps=50,
                                           lr=16 / L_V)
    assert hist.status == "diverged" and len(caught) == 1
    assert issubclass(caught[0].category, RuntimeWarning)
    with pytest.raises(ValueError, match="steps"):
        gd_runs("softmax", [0], steps=0, factor=0.5)


def test_loss_rises_and_sweep():
    assert loss_rises([3.0, 2.0, 2.5, 1.0, 1.0, 1.2]) == 2 and loss_rises([1.0]) == 0
    sweep = step_factor_sweep(["softmax"], [0.5, 16.0], steps=20)
    assert set(sweep) == {("softmax", 0.5), ("softmax", 16.0)}
    ratio, rises, status = sweep["softmax", 0.5]
    assert ratio < 1 and rises == 0 and status == "max_steps"
    assert sweep["softmax", 16.0][2] == "diverged"
    table = sweep_table(sweep)
    assert table.header[:2] == ["c", "Softmax: f_T/f_0"]
    assert [row[0] for row in table.rows] == ["0.5", "16"]


def _history(loss, status="max_steps"):
    return History(loss=list(loss), grad_norms={"W_V": [4.0, 2.0, 0.5]}, status=status)


def test_run_summary_against_hand_values():
    a = _history([1.0, 0.5, 0.25, 0.2])
    b = _history([2.0, 1.0, 1.5, 0.5], status="tolerance")
    s = run_summary([a, b], window=2)
    assert s.ratios.tolist() == [0.2, 0.25] and s.rises == [0, 1]
    assert s.statuses == {"max_steps", "tolerance"}
    assert s.early == pytest.approx([0.5, math.sqrt(0.75)])
    assert s.late == pytest.approx([math.sqrt(0.4), math.sqrt(0.5)])
    table = summary_table({"softmax": s})
    assert table.rows[0][:3] == [
        "Softmax", "max_steps, tolerance", "2.0e-01 to 2.5e-01"
    ]
    assert "first 2 steps" in table.header[4]
    with pytest.raises(ValueError, match="more than window = 5"):
        run_summary([a], window=5)


def test_grad_norm_plot_and_table():
    hist = _history([1.0, 0.5, 0.2])
    table = grad_norm_table({"gaussian": hist.grad_norms})
    assert table.rows == [["Gaussian", "W_V", "4", "8x"]]
    fig = plot_grad_norms({"softmax": hist, "gaussian": hist})
    line = fig.axes[0].lines[0]
    assert np.allclose(line.get_ydata(), [4.0, 2.0, 0.5])
    assert matplotlib.colors.to_hex(line.get_color()) == MATRIX_COLORS["W_V"].lower()
    plt.close(fig)
    fig = plot_relative_losses({"softmax": [hist]}, title="t")
    assert np.allclose(fig.axes[0].lines[0].get_ydata(), [1.0, 0.5, 0.2])
    plt.close(fig)
    fig = plot_value_gaps({"softmax": [(hist, 0.1, None)]}, floor=1e-3)
    assert np.allclose(fig.axes[0].lines[0].get_ydata(), [1.0, 4 / 9, 1 / 9])
    plt.close(fig)
    with pytest.raises(ValueError, match="one run per kernel"):
        plot_grad_norms({})


def test_value_only_runs_converge_at_the_predicted_rate():
    (run,) = value_only_runs("softmax", [0], steps=200)
    hist, f_star, bound = run
    assert bound.lr == pytest.approx(1 / bound.L) and hist.status == "max_steps"
    final_rel, tail_err, bound_ok = linear_rate_check(hist, f_star, bound)
    assert final_rel < 1e-10 and tail_err < 1e-2 and bound_ok
    # A run that stops too early never reaches the measuring window.
    short = History(loss=hist.loss[:3])
    with pytest.raises(ValueError, match="window"):
        linear_rate_check(short, f_star, bound)
    # A bound that is too optimistic is detected.
    fast = dataclasses.replace(bound, rate=0.0)
    assert linear_rate_check(hist, f_star, fast)[2] is False
