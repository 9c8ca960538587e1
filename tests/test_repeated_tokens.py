"""Tests of lib.repeated_tokens: the repeated-token problem, training on both targets,
and the figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lib.data import random_problem  # noqa: E402
from lib.model import AttentionLayer  # noqa: E402
from lib.repeated_tokens import (plot_repeated_tokens,  # noqa: E402
                                 repeated_token_problem, train_both_targets)
from lib.theory import optimal_values  # noqa: E402


def test_repeated_token_problem():
    prob = random_problem(3, 4, 8, seed=3)
    X0 = prob.X.clone()
    rep = repeated_token_problem(prob.X, prob.Y, sample=1, source=2, target=0)
    assert torch.equal(prob.X, X0)  # the input is not modified
    assert torch.equal(rep.X[1, 0], rep.X[1, 2]) and torch.equal(rep.X[0], prob.X[0])
    assert torch.equal(rep.Y_differ, prob.Y)
    assert torch.equal(rep.Y_agree[1, 0], prob.Y[1, 2])
    expected = ((prob.Y[1, 2] - prob.Y[1, 0]) ** 2).sum().item() / (4 * 3)
    assert abs(rep.f_rep - expected) <= 1e-15 * expected
    # the W_V-only optimum (square orthogonal W_O blocks, H D >= N n) equals f_rep
    model = AttentionLayer(8, H=2, init="orthogonal", seed=5)
    f_star = optimal_values(model, rep.X, rep.Y_differ).loss
    assert abs(f_star - rep.f_rep) <= 1e-9 * rep.f_rep
    with pytest.raises(ValueError, match="different tokens"):
        repeated_token_problem(prob.X, prob.Y, source=1, target=1)
    with pytest.raises(ValueError, match="sample"):
        repeated_token_problem(prob.X, prob.Y, sample=3)
    with pytest.raises(ValueError, match=r"\(N, n, D\)"):
        repeated_token_problem(prob.X[0], prob.Y[0])


def test_train_both_targets_and_plot():
    prob = random_problem(2, 3, 4, seed=1)
    rep = repeated_token_problem(prob.X, prob.Y)
    loss = train_both_targets(rep, "softmax", 1, 1.0, 20, seed=5)
    assert loss.shape == (21, 2) and np.all(loss[:, 0] >= rep.f_rep)
    assert loss[-1, 1] < loss[0, 1] and loss[-1, 0] < loss[0, 0]
    with pytest.raises(ValueError, match="steps"):
        train_both_targets(rep, "softmax", 1, 1.0, 0)
    fig = plot_repeated_tokens({"softmax": loss, "gaussian": loss}, rep.f_rep)
    assert len(fig.axes[0].lines) == 5
    plt.close("all")
