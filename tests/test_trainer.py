"""Tests of lib.trainer: histories, frozen weights, stopping rules, failures, callbacks,
bad input."""
from __future__ import annotations

import dataclasses
import math
import warnings

import pytest
import torch

from lib.data import random_inputs, random_targets
from lib.model import WEIGHT_NAMES, AttentionLayer, squared_loss
from lib.theory import predicted_rate
from lib.trainer import (
    GDConfig,
    History,
    StepState,
    TrainingError,
    check_trainable,
    train,
)
from reference import DEVICE, randn

N, n, D = 2, 3, 4


def problem(kernel="softmax", seed=0, **kwargs):
    model = AttentionLayer(D, H=2, kernel=kernel, seed=seed, device=DEVICE, **kwargs)
    X = random_inputs(N, n, D, seed=seed + 100, device=DEVICE)
    Y = random_targets(N, n, model.d_out, seed=seed + 200, device=DEVICE)
    return model, X, Y


def snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


# ------------------------------------------------------------------ history
@pytest.mark.parametrize("kernel", ["softmax", "gaussian"])
def test_loss_recorded_at_every_step_including_zero(kernel):
    model, X, Y = problem(kernel)
    with torch.no_grad():
        initial = float(squared_loss(model(X), Y))
    history = train(model, X, Y, steps=7, lr=0.05)
    assert isinstance(history, History)
    assert len(history.loss) == 8 and history.steps_run == 7
    assert history.loss[0] == pytest.approx(initial, rel=1e-14)
    assert history.status == "max_steps" and not history.failed
    assert history.final_loss == history.loss[-1]
    with torch.no_grad():
        after = float(squared_loss(model(X), Y))
    # loss[-1] is the loss of the final weights (the last update is not applied
    # after it)
    assert history.loss[-1] == pytest.approx(after, rel=1e-14)
    assert history.loss[-1] < history.loss[0]


def test_zero_steps_records_the_initial_loss_only():
    model, X, Y = problem()
    before = snapshot(model)
    history = train(model, X, Y, steps=0, lr=0.1)
    assert len(history.loss) == 1 and history.status == "max_steps"
    for name, value in snapshot(model).items():
        assert torch.equal(value, before[name])


def test_grad_norms_per_trainable_matrix():
    model, X, Y = problem()
    trainable = ("W_Q", "W_V")
    loss = squared_loss(model(X), Y)
    expected = {
        name: float(
            torch.autograd.grad(loss, getattr(model, name),
                                retain_graph=True)[0].norm())
        for name in trainable
    }
    history = train(model, X, Y, steps=4, lr=0.05, trainable=trainable)
    assert set(history.grad_norms) == set(trainable)
    for name in trainable:
        assert len(history.grad_norms[name]) == 5
        assert history.grad_norms[name][0] == pytest.approx(expected[name], rel=1e-12)


def test_one_step_is_a_gradient_step():
    model, X, Y = problem("gaussian")
    lr = 0.07
    loss = squared_loss(model(X), Y)
    grads = dict(
        zip(WEIGHT_NAMES,
            torch.autograd.grad(loss, [getattr(model, k) for k in WEIGHT_NAMES])))
    before = snapshot(model)
    train(model, X, Y, steps=1, lr=lr)
    for name in WEIGHT_NAMES:
        assert torch.allclose(
            getattr(model, name).detach(), before[name] - lr * grads[name], atol=1e-15,
            rtol=0)


@pytest.mark.parametrize("trainable", [("W_V",), ("W_Q", "W_K"), ("W_O",), ("W_Q",)])
def test_frozen_weights_unchanged_and_trainable_move(trainable):
    model, X, Y = problem("gaussian")
    before = snapshot(model)
    train(model, X, Y, steps=5, lr=0.05, trainable=trainable)
    for name in WEIGHT_NAMES:
        now = getattr(model, name).detach()
        if name in trainable:
            assert not torch.equal(now, before[name]), f"{name} did not move"
        else:
            assert torch.equal(now, before[name]), f"frozen {name} changed"


def test_trainable_accepts_a_single_name():
    model, X, Y = problem()
    history = train(model, X, Y, steps=2, lr=0.05, trainable="W_V")
    assert list(history.grad_norms) == ["W_V"]


@pytest.mark.parametrize("flags", [(True, True, True, True), (False, True, False, True),
                                   (False, False, False, False)])
def test_requires_grad_flags_restored(flags):
    model, X, Y = problem()
    for p, flag in zip(model.parameters(), flags):
        p.requires_grad_(flag)
    train(model, X, Y, steps=2, lr=0.05, trainable=("W_Q", "W_V"))
    assert tuple(p.requires_grad for p in model.parameters()) == flags


def test_requires_grad_flags_restored_after_a_failure():
    model, X, Y = problem()
    model.W_O.requires_grad_(False)
    with pytest.raises(TrainingError):
        train(model, X, Y, steps=2, lr=0.05, on_failure="raise",
              loss_fn=lambda p, y: squared_loss(p, y) * math.nan)
    assert [p.requires_grad for p in model.parameters()] == [True, True, True, False]


def test_determinism_same_seed_same_history():
    runs = []
    for _ in range(2):
        model, X, Y = problem("gaussian", seed=3)
        history = train(model, X, Y, steps=6, lr=0.05)
        runs.append((history, snapshot(model)))
    (h1, w1), (h2, w2) = runs
    assert h1.loss == h2.loss and h1.grad_norms == h2.grad_norms
    for name in WEIGHT_NAMES:
        assert torch.equal(w1[name], w2[name])
    model, X, Y = problem("gaussian", seed=4)
    assert train(model, X, Y, steps=6, lr=0.05).loss != h1.loss


# ------------------------------------------------------------------ stopping rules
# and failures
def test_loss_tol_stops_early():
    model, X, Y = problem()
    full = train(*problem(), steps=30, lr=0.1, trainable=("W_V",))
    tol = full.loss[
        10
    ]  # reached exactly at step 10 (runs are deterministic; "loss <= loss_tol" stops)
    assert all(full.loss[t + 1] < full.loss[t] for t in range(12))
    history = train(model, X, Y, steps=30, lr=0.1, trainable=("W_V",), loss_tol=tol)
    assert history.status == "tolerance"
    assert history.loss == full.loss[:11]
    assert history.steps_run == 10
    assert "loss_tol" in history.message


def _diverging_lr(model, X):
    """A step size 10 / L for the W_V-only problem: every step multiplies the gap by
    about 81."""
    return 10.0 / predicted_rate(model, X, lr=1.0).L


def test_huge_step_size_diverges_with_a_warning():
    model, X, Y = problem()
    lr = _diverging_lr(model, X)
    with pytest.warns(RuntimeWarning, match=r"diverged at step \d+") as record:
        history = train(model, X, Y, steps=50, lr=lr, trainable=("W_V",))
    assert history.status == "diverged" and history.failed
    message = str(record[0].message)
    step = history.steps_run
    assert f"step {step}" in message and f"lr={lr}" in message
    assert history.loss[-1] > 1e6 * history.loss[0] and all(
        math.isfinite(v) for v in history.loss)
    assert history.message == message


def test_divergence_factor_is_respected():
    model, X, Y = problem()
    lr = _diverging_lr(model, X)
    with pytest.warns(RuntimeWarning, match="diverged"):
        history = train(model, X, Y, steps=50, lr=lr, trainable=("W_V", ),
                        divergence_factor=10.0)
    assert history.loss[-1] > 10 * history.loss[0]
    assert all(value <= 10 * history.loss[0] for value in history.loss[:-1])


def test_divergence_raises_with_on_failure_raise():
    model, X, Y = problem()
    with pytest.raises(TrainingError, match=r"diverged at step \d+: .*lr="):
        train(model, X, Y, steps=50, lr=_diverging_lr(model, X), trainable=("W_V", ),
              on_failure="raise")


def test_nan_loss_is_reported():
    model, X, Y = problem()
    with pytest.warns(RuntimeWarning, match="step 0: the loss is nan"):
        history = train(model, X, Y, steps=5, lr=0.1,
                        loss_fn=lambda p, y: squared_loss(p, y) * math.nan)
    assert history.status == "non_finite" and history.failed
    assert len(history.loss) == 1 and math.isnan(history.loss[0])


def test_nan_appearing_later_is_reported_at_its_step():
    calls = []

    def loss_fn(prediction, Y):
        calls.append(1)
        loss = squared_loss(prediction, Y)
        return loss * math.nan if len(calls) == 4 else loss

    model, X, Y = problem()
    with pytest.raises(TrainingError, match="step 3: the loss is nan"):
        train(model, X, Y, steps=10, lr=0.01, loss_fn=loss_fn, on_failure="raise")


def test_overflowing_inputs_are_reported():
    model, _, Y = problem()
    X = random_inputs(N, n, D, seed=5,
                      device=DEVICE) * 1e200  # finite, but the loss overflows
    with pytest.warns(RuntimeWarning, match="step 0"):
        history = train(model, X, Y, steps=3, lr=0.1)
    assert history.status == "non_finite"
    with pytest.raises(TrainingError, match="not finite|loss is"):
        train(model, X, Y, steps=3, lr=0.1, on_failure="raise")


def test_non_finite_gradient_is_reported():
    """A finite loss with an infinite gradient (d/dx of sqrt at 0) is caught too."""
    model, X, Y = problem()

    def loss_fn(prediction, Y):
        return squared_loss(prediction, Y) + torch.sqrt((model.W_O * 0.0).sum())

    with pytest.warns(RuntimeWarning, match="the gradient of W_O is not finite"):
        history = train(model, X, Y, steps=3, lr=0.1, loss_fn=loss_fn)
    assert history.status == "non_finite"


# ------------------------------------------------------------------ callbacks
def test_callbacks_record_diagnostics_at_the_right_steps():
    model, X, Y = problem()
    seen = []

    def callback(state: StepState):
        assert isinstance(state, StepState)
        # during training only the trainable weights require gradients
        assert [p.requires_grad
                for p in state.model.parameters()] == [False, False, True, True]
        with torch.no_grad():
            recomputed = float(squared_loss(state.model(X), Y))
        seen.append(state.step)
        return {
            "loss_again": recomputed,
            "grad_V": float(state.grads["W_V"].norm()),
            "W_V_norm": float(state.model.W_V.detach().norm())
        }

    def other(state):
        return None  # a callback may return nothing

    history = train(model, X, Y, steps=10, lr=0.05, trainable=("W_V", "W_O"),
                    callbacks=[callback, other], callback_every=3)
    assert history.diagnostic_steps == [0, 3, 6, 9, 10] == seen
    assert set(history.diagnostics) == {"loss_again", "grad_V", "W_V_norm"}
    for i, step in enumerate(history.diagnostic_steps):
        assert history.diagnostics["loss_again"][i] == pytest.approx(
            history.loss[step], rel=1e-13)
        assert history.diagnostics["grad_V"][i] == pytest.approx(
            history.grad_norms["W_V"][step], rel=1e-13)
    # the model is seen at theta_t: W_V changes between diagnostic steps
    assert len(set(history.diagnostics["W_V_norm"])) == 5


def test_callback_every_step_by_default():
    model, X, Y = problem()
    history = train(model, X, Y, steps=4, lr=0.05,
                    callbacks=[lambda s: {
                        "step": s.step
                    }])
    assert history.diagnostic_steps == [0, 1, 2, 3, 4]
    assert history.diagnostics["step"] == [0.0, 1.0, 2.0, 3.0, 4.0]


# ------------------------------------------------------------------ configuration
def test_config_and_overrides():
    config = GDConfig(steps=10, lr=0.05, trainable=("W_V",))
    model, X, Y = problem()
    history = train(model, X, Y, config, steps=3, lr=0.02)
    assert len(history.loss) == 4
    assert history.config.lr == 0.02 and history.config.trainable == ("W_V",)
    assert (
        config.steps == 10 and config.lr == 0.05
    )  # the caller's config is not modified
    same = train(*problem(), GDConfig(steps=3, lr=0.02, trainable=("W_V",)))
    assert same.loss == history.loss


def test_gdconfig_defaults():
    config = GDConfig()
    assert (
        config.trainable == WEIGHT_NAMES
        and config.on_failure == "warn"
        and config.loss_tol == 0.0
    )
    assert dataclasses.replace(config, trainable="W_O").trainable == ("W_O",)


@pytest.mark.parametrize("lr", [0, 0.0, -0.1, math.nan, math.inf])
def test_non_positive_step_sizes_rejected(lr):
    with pytest.raises(ValueError, match="lr"):
        GDConfig(lr=lr)
    model, X, Y = problem()
    with pytest.raises(ValueError, match="lr"):
        train(model, X, Y, steps=1, lr=lr)


def test_step_size_must_be_a_number():
    with pytest.raises(TypeError, match="lr"):
        GDConfig(lr="0.1")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"steps": -1}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"trainable": ()}, "trainable"),
        ({"loss_tol": -1.0}, "loss_tol"),
        ({"loss_tol": math.nan}, "loss_tol"),
        ({"divergence_factor": 0.0}, "divergence_factor"),
        ({"on_failure": "ignore"}, "on_failure"),
        ({"callback_every": 0}, "callback_every"),
    ],
)
def test_bad_config_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GDConfig(**kwargs)


def test_unknown_trainable_name():
    model, X, Y = problem()
    with pytest.raises(
            ValueError,
            match=r"unknown name 'W_X' in trainable; valid: W_Q, W_K, W_V, W_O"):
        train(model, X, Y, steps=1, trainable=("W_V", "W_X"))
    with pytest.raises(ValueError, match="unknown name"):
        check_trainable(model, ["w_q"])
    assert check_trainable(model, ["W_O"])[0] is model.W_O


def test_unknown_override():
    model, X, Y = problem()
    with pytest.raises(TypeError, match="stepz"):
        train(model, X, Y, stepz=3)


# ------------------------------------------------------------------ bad data
def test_X_and_Y_must_agree_in_N_and_n():
    model, X, Y = problem()
    with pytest.raises(ValueError, match="must agree in N and n"):
        train(model, X, Y[:1], steps=1)
    with pytest.raises(ValueError, match="must agree in N and n"):
        train(model, X, Y[:, :2], steps=1)


def test_Y_shape_mismatching_prediction():
    model, X, _ = problem()
    Y = randn(N, n, D + 1)
    with pytest.raises(ValueError, match="Y must have the prediction's shape"):
        train(model, X, Y, steps=1)


def test_train_rejects_wrong_ranks():
    model, X, Y = problem()
    with pytest.raises(ValueError, match="X must have 3 dimensions"):
        train(model, X[0], Y, steps=1)
    with pytest.raises(ValueError, match="Y must have 3 dimensions"):
        train(model, X, Y[0], steps=1)


@pytest.mark.parametrize("which", ["X", "Y"])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_train_rejects_non_finite_data(which, bad):
    model, X, Y = problem()
    data = {"X": X.clone(), "Y": Y.clone()}
    data[which][1, 2, 0] = bad
    with pytest.raises(ValueError, match=f"{which} must contain only finite values"):
        train(model, data["X"], data["Y"], steps=1)


def test_train_rejects_wrong_dtype():
    model, X, Y = problem()
    with pytest.raises(TypeError, match="dtype"):
        train(model, X.to(torch.float32), Y, steps=1)


def test_no_warning_on_a_healthy_run():
    model, X, Y = problem()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        history = train(model, X, Y, steps=5, lr=0.05)
    assert history.status == "max_steps" and history.message
    assert history.contraction_factors()[0] == pytest.approx(
        history.loss[1] / history.loss[0])


def test_contraction_factors():
    history = History(loss=[4.0, 2.0, 1.5, 1.0, 1.0])
    assert history.contraction_factors() == [0.5, 0.75, 1.0 / 1.5, 1.0]
    factors = history.contraction_factors(f_star=1.0)
    assert factors[:2] == [1.0 / 3.0, 0.5] and factors[2] == 0.0 and math.isnan(
        factors[3])


# ------------------------------------------------------------------ bad input, answered
def test_repeated_trainable_names_are_rejected():
    model, X, Y = problem()
    before = snapshot(model)
    with pytest.raises(ValueError, match="trainable must not repeat a name"):
        train(model, X, Y, steps=2, trainable=("W_V", "W_V"))
    assert all(torch.equal(before[k], v) for k, v in snapshot(model).items())


def test_the_step_0_message_says_no_step_was_taken():
    model, X, Y = problem()
    with torch.no_grad():
        model.W_O[0, 0] = float("inf")
    with pytest.warns(RuntimeWarning,
                      match="at the initial weights; no step was taken") as caught:
        history = train(model, X, Y, steps=5, lr=0.1)
    assert history.status == "non_finite" and history.steps_run == 0
    assert "step size (lr=0.1) is not the cause" in str(caught[0].message)


@pytest.mark.parametrize("empty", ["N", "n"])
def test_empty_data_is_rejected(empty):
    model, _, _ = problem()
    shape = (0, n, D) if empty == "N" else (N, 0, D)
    X = torch.zeros(shape, dtype=torch.float64)
    Y = torch.zeros(shape[:2] + (model.d_out,), dtype=torch.float64)
    with pytest.raises(ValueError, match="X must not be empty"):
        train(model, X, Y, steps=1)
    with pytest.raises(ValueError, match="X must not be empty"):
        model(X)
