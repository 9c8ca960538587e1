"""Tests of lib.batched: M models in one computation equal M separate AttentionLayers
and train runs."""
from __future__ import annotations

import importlib.util
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from lib.batched import (
    IMPLEMENTATIONS,
    BatchedAttentionLayer,
    BatchedHistory,
    train_batched,
)
from lib.data import random_inputs, teacher_problem
from lib.model import WEIGHT_NAMES, AttentionLayer
from lib.theory import predicted_rate
from lib.trainer import GDConfig, History, TrainingError, train

CPU = torch.device("cpu")
KERNELS = ("softmax", "gaussian", "gaussian_normalized")
TOL = 1e-10  # relative agreement with one-at-a-time training, float64


def _rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def _problems(M, N, n, D, kernel="softmax", H=1, **kw):
    problems = [
        teacher_problem(N, n, D, kernel=kernel, H=H, seed=100 + s, device=CPU, **kw)
        for s in range(M)
    ]
    return problems, torch.stack([p.X for p in problems
                                  ]), torch.stack([p.Y for p in problems])


def _quiet_train(layer, X, Y, **kw) -> History:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return train(layer, X, Y, **kw)


# ----------------------------------------------------------------------------- the
# model
@pytest.mark.parametrize("init", ["lecun", "xavier", "orthogonal"])
def test_initialisation_equals_single_layers(init):
    seeds, scales = [3, 7, 11], [1.0, 0.5, 2.0]
    bm = BatchedAttentionLayer(3, 5, H=2, d=3, d_v=4, d_out=6, init=init,
                               qk_scale=scales, seeds=seeds, device=CPU)
    assert bm.W_Q.shape == (3, 2, 5,
                            3) and bm.W_V.shape == (3, 2, 5,
                                                    4) and bm.W_O.shape == (3, 8, 6)
    for m, (seed, scale) in enumerate(zip(seeds, scales)):
        layer = AttentionLayer(5, H=2, d=3, d_v=4, d_out=6, init=init, qk_scale=scale,
                               seed=seed, device=CPU)
        for name in WEIGHT_NAMES:
            assert torch.equal(getattr(bm, name)[m], getattr(layer, name)), name


def test_unseeded_models_follow_the_global_generator():
    torch.manual_seed(5)
    bm = BatchedAttentionLayer(2, 4, device=CPU)
    torch.manual_seed(5)
    layers = [AttentionLayer(4, device=CPU), AttentionLayer(4, device=CPU)]
    for m, layer in enumerate(layers):
        assert torch.equal(bm.W_K[m], layer.W_K)


def test_from_layers_and_layer_round_trip():
    layers = [
        AttentionLayer(4, H=2, kernel="gaussian", gamma=0.3, seed=s, qk_scale=1 + s,
                       device=CPU) for s in range(3)
    ]
    bm = BatchedAttentionLayer.from_layers(layers)
    assert (
        bm.M == 3
        and bm.kernel == "gaussian"
        and bm.gamma == 0.3
        and bm.qk_scales == (1.0, 2.0, 3.0)
    )
    for m, layer in enumerate(layers):
        copy = bm.layer(m)
        assert (
            copy.kernel == "gaussian"
            and copy.gamma == 0.3
            and copy.qk_scale == layer.qk_scale
        )
        for name in WEIGHT_NAMES:
            assert torch.equal(getattr(copy, name), getattr(layer, name))
    with torch.no_grad():
        bm.W_V.zero_()
    assert not torch.equal(layers[0].W_V, bm.W_V[0])  # a copy, not shared storage
    assert len(bm.layers()) == 3 and torch.equal(bm.layer(-1).W_Q, layers[2].W_Q)


def test_validation_errors():
    with pytest.raises(ValueError, match="M must be a positive integer"):
        BatchedAttentionLayer(0, 4, device=CPU)
    with pytest.raises(ValueError, match="seeds must have one entry per model"):
        BatchedAttentionLayer(3, 4, seeds=[1, 2], device=CPU)
    with pytest.raises(ValueError, match="seeds must be non-negative"):
        BatchedAttentionLayer(2, 4, seeds=[1, -2], device=CPU)
    with pytest.raises(ValueError, match="qk_scale must have one entry per model"):
        BatchedAttentionLayer(3, 4, qk_scale=[1.0, 2.0], device=CPU)
    with pytest.raises(ValueError, match="unknown impl"):
        BatchedAttentionLayer(2, 4, impl="fast", device=CPU)
    with pytest.raises(ValueError, match="unknown kernel"):
        BatchedAttentionLayer(2, 4, kernel="laplace", device=CPU)
    with pytest.raises(ValueError, match="must share D"):
        BatchedAttentionLayer.from_layers(
            [AttentionLayer(4, device=CPU),
             AttentionLayer(5, device=CPU)])
    with pytest.raises(TypeError,
                       match=r"layers\[1\] must be a lib.model.AttentionLayer"):
        BatchedAttentionLayer.from_layers(
            [AttentionLayer(4, device=CPU),
             torch.nn.Linear(2, 2)])
    bm = BatchedAttentionLayer(2, 4, seeds=[0, 1], device=CPU)
    with pytest.raises(ValueError, match="X must have 3 or 4 dimensions"):
        bm(torch.zeros(4, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"X must have shape \(2, \*, \*, 4\)"):
        bm(torch.zeros(3, 2, 2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"X must have shape \(\*, \*, 4\)"):
        bm(torch.zeros(2, 2, 5, dtype=torch.float64))
    with pytest.raises(TypeError, match="dtype"):
        bm(torch.zeros(2, 2, 4, dtype=torch.float32))
    with pytest.raises(ValueError, match="finite"):
        bm(torch.full((2, 2, 4), float("nan"), dtype=torch.float64))
    with pytest.raises(IndexError, match="out of range"):
        bm.layer(2)


@pytest.mark.parametrize("impl", ["bmm", "broadcast"])
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("shared", [True, False])
def test_forward_equals_single_layers(impl, kernel, shared):
    M, N, n, D = 3, 4, 5, 6
    gamma = 0.2 if kernel == "gaussian" else None
    bm = BatchedAttentionLayer(M, D, H=2, d=3, d_v=4, d_out=2, kernel=kernel,
                               gamma=gamma, qk_scale=[1.0, 1.5, 0.7], seeds=[1, 2, 3],
                               impl=impl, device=CPU)
    X = random_inputs(N, n, D, seed=0, device=CPU) if shared else torch.stack(
        [random_inputs(N, n, D, seed=s, device=CPU) for s in range(M)])
    out, S, heads = bm(X), bm.attention(X), bm.heads(X)
    assert out.shape == (M, N, n, 2) and S.shape == (M, N, 2, n,
                                                     n) and heads.shape == (M, N, 2, n,
                                                                            4)
    for m in range(M):
        layer = bm.layer(m)
        Xm = X if shared else X[m]
        torch.testing.assert_close(out[m], layer(Xm), rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(S[m], layer.attention(Xm), rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(heads[m], layer.heads(Xm), rtol=1e-12, atol=1e-13)


def test_implementations_are_documented_and_auto_picks_broadcast_on_cpu():
    assert set(IMPLEMENTATIONS) == {"auto", "bmm", "broadcast"}
    bm = BatchedAttentionLayer(2, 4, device=CPU)
    assert bm._use_broadcast(torch.zeros(3, 4, 4, dtype=torch.float64))
    assert not bm._use_broadcast(torch.zeros(
        3, 64, 4, dtype=torch.float64))  # long sequences: bmm


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("shared", [True, False])
def test_hand_derived_gradients_equal_autograd(kernel, shared):
    M, N, n, D = 3, 4, 3, 5
    bm = BatchedAttentionLayer(M, D, H=2, d=2, d_v=3, d_out=4, kernel=kernel,
                               qk_scale=1.5, seeds=[4, 5,
                                                    6], impl="broadcast", device=CPU)
    gen = torch.Generator().manual_seed(1)
    X = torch.randn((N, n, D) if shared else (M, N, n, D), generator=gen,
                    dtype=torch.float64)
    Y = torch.randn((N, n, 4) if shared else (M, N, n, 4), generator=gen,
                    dtype=torch.float64)
    Yb = Y if Y.dim() == 4 else Y.unsqueeze(0)
    loss = 0.5 * ((bm(X) - Yb) ** 2).sum(dim=(1, 2, 3)) / N
    auto = dict(
        zip(WEIGHT_NAMES,
            torch.autograd.grad(loss.sum(), [getattr(bm, k) for k in WEIGHT_NAMES])))
    for names in (WEIGHT_NAMES, ("W_K",), ("W_V", "W_Q")):
        value, grads = bm._broadcast_loss_and_grads(bm._prepare(X), N,
                                                    Yb.permute(0, 3, 2, 1).contiguous(),
                                                    names)
        torch.testing.assert_close(value, loss.detach(), rtol=1e-13, atol=0)
        assert list(grads) == list(names)
        for name in names:
            torch.testing.assert_close(grads[name], auto[name], rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------- training
def _compare_with_loop(bm, problems, histories_single, layers, history: BatchedHistory):
    for m, (single, layer) in enumerate(zip(histories_single, layers)):
        run = history.run(m)
        assert run.status == single.status and run.message == single.message
        assert len(run.loss) == len(single.loss)
        assert _rel(run.loss, single.loss) <= TOL
        for name in single.grad_norms:
            assert _rel(run.grad_norms[name], single.grad_norms[name]) <= 1e-8
        for name in WEIGHT_NAMES:
            ref = getattr(layer, name).detach()
            got = getattr(bm, name).detach()[m]
            assert float((got - ref).abs().max()) <= TOL * float(ref.abs().max()), name


@pytest.mark.parametrize("kernel", ["softmax", "gaussian"])
def test_train_batched_equals_loop_all_weights(kernel):
    M, steps, lr = 4, 40, 0.02
    problems, X, Y = _problems(M, 3, 3, 4, kernel=kernel)
    seeds = [20 + m for m in range(M)]
    bm = BatchedAttentionLayer(M, 4, kernel=kernel, seeds=seeds, device=CPU)
    history = train_batched(bm, X, Y, steps=steps, lr=lr)
    layers = [AttentionLayer(4, kernel=kernel, seed=s, device=CPU) for s in seeds]
    singles = [
        train(layer, p.X, p.Y, steps=steps, lr=lr)
        for layer, p in zip(layers, problems)
    ]
    _compare_with_loop(bm, problems, singles, layers, history)
    assert history.loss.shape == (steps + 1, M) and history.loss.dtype == np.float64
    assert history.status == ["max_steps"] * M and (history.stopped_at == steps).all()
    np.testing.assert_array_equal(history.final_loss, history.loss[-1])


@pytest.mark.parametrize("kernel", ["softmax", "gaussian"])
@pytest.mark.parametrize("impl", ["broadcast", "bmm"])
def test_per_model_early_stopping_and_step_size_vector(kernel, impl):
    # W_V alone, one step size per model (a fraction of 2 / L), and a loss
    # tolerance that some
    # models reach (each at its own step) and others do not.
    M, N, n, D, steps = 4, 2, 3, 6, 60
    problems, X, Y = _problems(M, N, n, D, kernel=kernel)
    seeds = [40 + m for m in range(M)]
    layers = [AttentionLayer(D, kernel=kernel, seed=s, device=CPU) for s in seeds]
    lrs = [
        f / predicted_rate(layer, p.X, 1.0).L
        for layer, p, f in zip(layers, problems, (0.5, 0.8, 1.1, 1.4))
    ]
    dry = [
        train(AttentionLayer(D, kernel=kernel, seed=s, device=CPU), p.X, p.Y,
              steps=steps, lr=lr, trainable=("W_V", )).loss[-1]
        for s, p, lr in zip(seeds, problems, lrs)
    ]
    config = GDConfig(steps=steps, trainable=("W_V",), loss_tol=float(np.median(dry)))
    bm = BatchedAttentionLayer(M, D, kernel=kernel, seeds=seeds, impl=impl, device=CPU)
    history = train_batched(bm, X, Y, config, lr=lrs)
    singles = [
        train(layer, p.X, p.Y, config, lr=lr)
        for layer, p, lr in zip(layers, problems, lrs)
    ]
    statuses = [s.status for s in singles]
    assert "tolerance" in statuses and "max_steps" in statuses
    assert len({len(s.loss) for s in singles}) > 2  # the models stop at different steps
    _compare_with_loop(bm, problems, singles, layers, history)
    np.testing.assert_array_equal(history.lr, lrs)
    assert history.run(1).config.lr == lrs[1]
    for m, single in enumerate(singles):  # NaN after a model stopped
        k = len(single.loss)
        assert np.isnan(history.loss[k:, m]).all() and np.isfinite(
            history.loss[:k, m]).all()
        assert history.stopped_at[m] == k - 1
    assert list(history.grad_norms) == ["W_V"]


def test_shared_inputs_and_targets():
    problem = teacher_problem(3, 3, 4, seed=1, device=CPU)
    seeds = [11, 12, 13]
    bm = BatchedAttentionLayer(3, 4, seeds=seeds, device=CPU)
    history = train_batched(bm, problem.X, problem.Y, steps=25, lr=0.03)
    for m, s in enumerate(seeds):
        layer = AttentionLayer(4, seed=s, device=CPU)
        single = train(layer, problem.X, problem.Y, steps=25, lr=0.03)
        assert _rel(history.run(m).loss, single.loss) <= TOL


def test_failures_are_frozen_reported_once_and_raised():
    M, steps = 4, 30
    problems, X, Y = _problems(M, 3, 3, 4)
    seeds = [60 + m for m in range(M)]
    lrs = [0.02, 50.0, 0.02, 1e4]
    bm = BatchedAttentionLayer(M, 4, seeds=seeds, device=CPU)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = train_batched(bm, X, Y, steps=steps, lr=lrs)
    failed = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(failed) == 1 and "2 of 4 models failed" in str(failed[0].message)
    assert "model 1:" in str(failed[0].message) and "model 3:" in str(failed[0].message)
    assert history.failed.tolist() == [False, True, False, True]
    layers = [AttentionLayer(4, seed=s, device=CPU) for s in seeds]
    singles = [
        _quiet_train(layer, p.X, p.Y, steps=steps, lr=lr)
        for layer, p, lr in zip(layers, problems, lrs)
    ]
    _compare_with_loop(bm, problems, singles, layers, history)
    assert history.status[1] == "diverged"

    bm = BatchedAttentionLayer(M, 4, seeds=seeds, device=CPU)
    with pytest.raises(TrainingError, match="model 1: training diverged"):
        train_batched(bm, X, Y, steps=steps, lr=lrs, on_failure="raise")


def test_non_finite_values_stop_only_that_model():
    M, steps = 3, 40
    problems, X, Y = _problems(M, 3, 3, 4)
    seeds = [70, 71, 72]
    lrs = [0.02, 1e6, 0.02]
    config = GDConfig(steps=steps, divergence_factor=1e300)
    bm = BatchedAttentionLayer(M, 4, seeds=seeds, device=CPU)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        history = train_batched(bm, X, Y, config, lr=lrs)
    layers = [AttentionLayer(4, seed=s, device=CPU) for s in seeds]
    singles = [
        _quiet_train(layer, p.X, p.Y, config=config, lr=lr)
        for layer, p, lr in zip(layers, problems, lrs)
    ]
    assert singles[1].status == "non_finite"
    assert history.status == [s.status for s in singles]
    for m in (0, 2):
        assert _rel(history.run(m).loss, singles[m].loss) <= TOL
    assert torch.isfinite(bm.W_Q[0]).all() and torch.isfinite(bm.W_Q[2]).all()


def test_callbacks_record_per_model_diagnostics():
    M, steps, every = 3, 12, 5
    problems, X, Y = _problems(M, 3, 3, 4)
    seeds = [80, 81, 82]

    def batched_callback(state):
        assert state.loss.shape == (M,) and state.active.dtype == torch.bool
        return {
            "w_v_norm": state.model.W_V.detach().flatten(1).norm(dim=1),
            "grad_o": state.grads["W_O"].flatten(1).norm(dim=1)
        }

    def single_callback(state):
        return {
            "w_v_norm": float(state.model.W_V.detach().norm()),
            "grad_o": float(state.grads["W_O"].norm())
        }

    config = GDConfig(steps=steps, lr=0.02, callback_every=every, loss_tol=0.0)
    bm = BatchedAttentionLayer(M, 4, seeds=seeds, device=CPU)
    history = train_batched(bm, X, Y, config, callbacks=[batched_callback])
    assert history.diagnostic_steps == [0, 5, 10, 12]
    assert history.diagnostics["w_v_norm"].shape == (4, M)
    for m, s in enumerate(seeds):
        layer = AttentionLayer(4, seed=s, device=CPU)
        single = train(layer, problems[m].X, problems[m].Y, config,
                       callbacks=[single_callback])
        run = history.run(m)
        assert run.diagnostic_steps == single.diagnostic_steps
        for key in ("w_v_norm", "grad_o"):
            assert _rel(run.diagnostics[key], single.diagnostics[key]) <= 1e-9

    def bad_callback(state):
        return {"x": np.zeros(M + 1)}

    with pytest.raises(ValueError, match="one value per model"):
        train_batched(BatchedAttentionLayer(M, 4, seeds=seeds, device=CPU), X, Y,
                      config, callbacks=[bad_callback])


def test_run_has_the_structure_of_a_single_history():
    problems, X, Y = _problems(2, 3, 3, 4)
    bm = BatchedAttentionLayer(2, 4, seeds=[1, 2], device=CPU)
    history = train_batched(bm, X, Y, steps=5, lr=0.01, trainable=("W_Q", "W_O"))
    run = history.run(0)
    assert isinstance(run, History) and run.steps_run == 5 and run.status == "max_steps"
    assert set(run.grad_norms) == {"W_Q", "W_O"} and all(
        len(v) == 6 for v in run.grad_norms.values())
    assert all(isinstance(v, float) for v in run.loss)
    assert [r.final_loss for r in history.runs()] == history.final_loss.tolist()
    assert bm.W_Q.requires_grad and bm.W_V.requires_grad  # flags restored


def test_train_batched_validation():
    problems, X, Y = _problems(2, 3, 3, 4)
    bm = BatchedAttentionLayer(2, 4, seeds=[1, 2], device=CPU)
    with pytest.raises(TypeError, match="BatchedAttentionLayer"):
        train_batched(AttentionLayer(4, device=CPU), X[0], Y[0], steps=1)
    with pytest.raises(ValueError, match="unknown name 'W_X'"):
        train_batched(bm, X, Y, steps=1, trainable=("W_X",))
    with pytest.raises(ValueError, match="lr must have one entry per model"):
        train_batched(bm, X, Y, steps=1, lr=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="finite number > 0"):
        train_batched(bm, X, Y, steps=1, lr=[0.1, -0.2])
    with pytest.raises(ValueError, match="agree in N and n"):
        train_batched(bm, X, Y[:, :2], steps=1)
    with pytest.raises(ValueError, match="M = 2 on axis 0"):
        train_batched(bm, X, torch.cat([Y, Y]), steps=1)
    with pytest.raises(ValueError, match="must not repeat"):
        train_batched(bm, X, Y, steps=1, trainable=("W_V", "W_V"))


# -----------------------------------------------------------------------------
# benchmark core
def _load_benchmark():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "batched_vs_loop.py"
    spec = importlib.util.spec_from_file_location("batched_vs_loop", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_benchmark_core_agrees_at_reduced_size():
    bench = _load_benchmark()
    result = bench.run_benchmark(M=4, N=4, n=3, D=4, steps=15, rounds=2)
    assert result.agree, (result.max_loss_rel_diff, result.max_weight_rel_diff)
    assert result.statuses == {"max_steps": 4}
    assert result.loop_cpu > 0 and result.batched_cpu > 0 and math.isfinite(
        result.ratio_cpu)


# ------------------------------------------------------------------ per-model losses
@pytest.mark.parametrize("shared", [True, False])
def test_per_model_loss_equals_single_model_losses(shared):
    from lib.batched import per_model_loss
    from lib.model import squared_loss

    problems, X, Y = _problems(3, 4, 3, 5, kernel="gaussian", H=2)
    model = BatchedAttentionLayer(3, 5, H=2, kernel="gaussian", seeds=[1, 2, 3],
                                  device=CPU)
    if shared:
        X, Y = problems[0].X, problems[0].Y
    losses = per_model_loss(model, X, Y)
    assert losses.shape == (3,)
    for m, layer in enumerate(model.layers()):
        Xm, Ym = (X, Y) if shared else (X[m], Y[m])
        assert _rel(losses[m].item(), squared_loss(layer(Xm), Ym).item()) <= TOL
    with pytest.raises(TypeError, match="BatchedAttentionLayer"):
        per_model_loss(model.layer(0), X, Y)


def test_train_layers_equals_train_batched_and_leaves_the_layers_unchanged():
    from lib.batched import train_layers

    problems, X, Y = _problems(3, 4, 3, 5)
    layers = [AttentionLayer(5, seed=s, device=CPU) for s in (1, 2, 3)]
    before = [layer.W_Q.detach().clone() for layer in layers]
    trained, history = train_layers(layers, X, Y, steps=5, lr=[0.1, 0.2, 0.3],
                                    trainable=("W_Q", ))
    reference = BatchedAttentionLayer.from_layers(layers)
    expected = train_batched(reference, X, Y, steps=5, lr=[0.1, 0.2, 0.3],
                             trainable=("W_Q", ))
    assert np.array_equal(history.loss, expected.loss) and len(trained) == 3
    for m, layer in enumerate(trained):
        assert torch.equal(layer.W_Q, reference.W_Q[m]) and torch.equal(
            layers[m].W_Q, before[m])


def test_batched_step_0_message_and_empty_data():
    problems, X, Y = _problems(2, 3, 3, 4)
    model = BatchedAttentionLayer(2, 4, seeds=[0, 1], device=CPU)
    with torch.no_grad():
        model.W_O[1, 0, 0] = float("nan")
    with pytest.warns(RuntimeWarning,
                      match="model 1: training stopped at step 0: .*no step was taken"):
        history = train_batched(model, X, Y, steps=3, lr=0.1)
    assert history.status == ["max_steps", "non_finite"]
    with pytest.raises(ValueError, match="X must not be empty"):
        train_batched(model, X[:, :0], Y[:, :0], steps=1)
