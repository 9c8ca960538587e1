"""Tests of lib.training: the bookkeeping the three trainers share."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from lib.model import AttentionLayer, LayerSettings
from lib.trainer import GDConfig
from lib.training import (
    DIVERGED,
    MAX_STEPS,
    NON_FINITE,
    TOLERANCE,
    CallbackRecorder,
    StoppingRules,
    TrainingError,
    non_finite_message,
    report_failures,
    resolve_config,
    trainable_only,
)


def test_resolve_config():
    assert resolve_config(None, {"steps": 3}, GDConfig).steps == 3
    base = GDConfig(steps=5, lr=0.2)
    assert resolve_config(base, {}, GDConfig) is base
    assert resolve_config(base, {"lr": 0.5}, GDConfig).lr == 0.5 and base.lr == 0.2
    with pytest.raises(TypeError, match="config must be a GDConfig"):
        resolve_config({"steps": 3}, {}, GDConfig)


def test_trainable_only_freezes_the_others_and_restores_the_flags():
    layer = AttentionLayer(3, seed=0, device="cpu")
    layer.W_O.requires_grad_(False)
    with trainable_only(layer, ("W_V", "W_O")) as params:
        assert [p is layer.W_V or p is layer.W_O for p in params] == [True, True]
        assert [p.requires_grad
                for p in layer.parameters()] == [False, False, True, True]
    assert [p.requires_grad for p in layer.parameters()] == [True, True, True, False]
    with pytest.raises(ValueError, match="trainable must not repeat a name"):
        with trainable_only(layer, ("W_V", "W_V")):
            pass
    with pytest.raises(ValueError, match="unknown name 'W_X' in trainable"):
        with trainable_only(layer, ("W_X",)):
            pass


def test_stopping_rules_act_per_model_in_order():
    config = GDConfig(steps=3, loss_tol=0.1, divergence_factor=10.0)
    rules = StoppingRules(config, [0.1, 0.2, 0.3, 0.4])
    values = np.array([1.0, 1.0, 1.0, 1.0])
    rules.apply(0, values, rules.decide(0, values, np.ones(4, bool)), lambda m: [])
    values = np.array([np.nan, 20.0, 0.05,
                       0.5])  # non-finite, diverged, tolerance, running
    decision = rules.decide(1, values, np.ones(4, bool))
    with pytest.warns(RuntimeWarning,
                      match="3 of 4 models failed|2 of 4 models failed"):
        stopped = rules.apply(1, values, decision, lambda m: [])
        report_failures(rules.status, rules.messages)
    assert stopped.tolist() == [True, True, True, False]
    assert rules.status[:3] == [NON_FINITE, DIVERGED, TOLERANCE
                                ] and rules.active.tolist() == [False] * 3 + [True]
    assert "lr=0.2" in rules.messages[1] and rules.stopped_at.tolist() == [1, 1, 1, -1]
    values = np.array([0.5, 0.5, 0.5, 0.4])
    rules.apply(3, values, rules.decide(3, values, np.ones(4, bool)), lambda m: [])
    assert rules.status[3] == MAX_STEPS and rules.messages[3] == "ran all 3 steps"


def test_stopping_rules_raise_with_on_failure_raise():
    rules = StoppingRules(GDConfig(steps=3, on_failure="raise"), [0.1])
    values = np.array([np.inf])
    with pytest.raises(TrainingError,
                       match="step 0: the loss is inf at the initial weights"):
        rules.apply(0, values, rules.decide(0, values, np.ones(1, bool)), lambda m: [])


def test_non_finite_message_blames_the_step_size_only_after_a_step():
    assert "no step was taken" in non_finite_message(0, float("nan"), [], 0.1)
    later = non_finite_message(4, 1.0, ["W_Q"], 0.1)
    assert (
        "the gradient of W_Q is not finite" in later
        and "try a smaller step size" in later
    )


def test_callback_recorder_masks_models_and_missing_keys():
    recorder = CallbackRecorder(3)
    recorder.record(0, None, [lambda s: {
        "a": np.arange(3.0)
    }], np.array([True, False, True]))
    recorder.record(5, None, [lambda s: {"b": 7.0}], np.array([True, True, True]))
    values, mask = recorder.values(), recorder.mask()
    assert values["a"].shape == (2, 3) and mask["a"].tolist() == [[True, False, True],
                                                                  [False] * 3]
    assert np.isnan(values["a"][0, 1]) and values["b"][1].tolist() == [7.0] * 3
    assert recorder.of_model(1) == ([5], {"b": [7.0]})
    assert recorder.of_model(0) == ([0, 5], {"a": [0.0], "b": [7.0]})
    with pytest.raises(ValueError, match="one value per model"):
        recorder.record(6, None, [lambda s: {"a": np.zeros(4)}], np.ones(3, bool))


def test_layer_settings_are_checked_once_and_shared():
    settings = LayerSettings(4, H=2, d_out=3, kernel="gaussian", gamma=0.3,
                             device="cpu")
    assert (settings.d, settings.d_v, settings.d_out) == (4, 4, 3)
    layer = settings.layer(seed=5, qk_scale=0.5)
    assert layer.settings == settings and layer.qk_scale == 0.5
    assert torch.equal(
        layer.W_Q,
        AttentionLayer(4, H=2, d_out=3, kernel="gaussian", gamma=0.3, seed=5,
                       qk_scale=0.5, device="cpu").W_Q)
    assert settings.replace(kernel="softmax").kernel == "softmax"
    for bad, match in (({
            "D": 0
    }, "D must be a positive integer"), ({
            "D": 2,
            "init": "he"
    }, "unknown init"), ({
            "D": 2,
            "kernel": "cosine"
    }, "unknown kernel"), ({
            "D": 2,
            "dtype": torch.int32
    }, "dtype")):
        with pytest.raises((TypeError, ValueError), match=match):
            LayerSettings(**bad)
    from lib.batched import BatchedAttentionLayer

    batched = BatchedAttentionLayer(2, 4, H=2, d_out=3, kernel="gaussian", gamma=0.3,
                                    seeds=[5, 6], device="cpu")
    assert batched.settings == settings
