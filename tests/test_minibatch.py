"""Tests of lib.minibatch: mini-batch training of classifiers."""
import json
import math
import warnings

import pytest
import torch
from torch import nn

from lib.classifier import TransformerClassifier
from lib.minibatch import (
    ClassifierHistory,
    MinibatchConfig,
    _BatchStream,
    evaluate,
    learning_rate,
    run_seeds,
    train_classifier,
    two_stage,
)
from lib.trainer import TrainingError

V, L = 12, 8


def token_problem(N=256, seed=0):
    """Label = whether token 5 appears; the last two positions are padding."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randint(1, V, (N, L), generator=g)
    X[:, L - 2 :] = 0
    y = (X == 5).any(dim=1).long()
    return X, y


def make_model(seed=0, **kw):
    args = dict(vocab_size=V, max_len=L, D=16, H=2, mlp_dim=32, num_layers=1, seed=seed)
    args.update(kw)
    return TransformerClassifier(**args)


class Linear2(nn.Module):
    num_classes = 2

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x):
        return self.lin(x)


# ------------------------------------------------------------------ config
def test_config_validation():
    assert MinibatchConfig().optimizer == "sgd"
    with pytest.raises(
            ValueError,
            match="unknown optimizer 'rmsprop'; valid: 'sgd', 'adam', 'adamw'"):
        MinibatchConfig(optimizer="rmsprop")
    with pytest.raises(ValueError,
                       match="lr \\(the learning rate\\) must be a finite number > 0"):
        MinibatchConfig(lr=0.0)
    with pytest.raises(ValueError, match="momentum must lie in \\[0, 1\\)"):
        MinibatchConfig(momentum=1.0)
    with pytest.raises(ValueError, match="momentum applies to optimizer='sgd' only"):
        MinibatchConfig(optimizer="adam", momentum=0.9)
    with pytest.raises(ValueError, match="weight_decay must lie in"):
        MinibatchConfig(weight_decay=-1e-4)
    with pytest.raises(ValueError, match="betas\\[1\\] must lie in \\[0, 1\\)"):
        MinibatchConfig(optimizer="adam", betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="betas must be a pair"):
        MinibatchConfig(betas=(0.9,))
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        MinibatchConfig(batch_size=0)
    with pytest.raises(ValueError, match="steps must be a non-negative integer"):
        MinibatchConfig(steps=-1)
    with pytest.raises(ValueError, match="eval_every must be a positive integer"):
        MinibatchConfig(eval_every=0)
    with pytest.raises(TypeError, match="eval_batch_size must be a positive integer"):
        MinibatchConfig(eval_batch_size=2.5)
    with pytest.raises(ValueError, match="grad_clip must be a finite number > 0"):
        MinibatchConfig(grad_clip=0.0)
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        MinibatchConfig(seed=-3)
    with pytest.raises(ValueError, match="unknown on_failure 'ignore'"):
        MinibatchConfig(on_failure="ignore")
    with pytest.raises(ValueError, match="divergence_factor must be > 1"):
        MinibatchConfig(divergence_factor=0.5)
    with pytest.raises(ValueError,
                       match="train_eval_size must be a non-negative integer"):
        MinibatchConfig(train_eval_size=-1)
    with pytest.raises(TypeError, match="progress must be True or False"):
        MinibatchConfig(progress="yes")


# ------------------------------------------------------------------ evaluate
def test_evaluate_matches_hand_computation():
    model = Linear2()
    with torch.no_grad():
        model.lin.weight.copy_(torch.tensor([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]]))
        model.lin.bias.copy_(torch.tensor([0.1, -0.2]))
    X = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0],
                      [1.0, 1.0, 1.0], [2.0, -1.0, 0.5]])
    y = torch.tensor([0, 1, 0, 1, 1])
    losses, correct = [], 0
    for x, label in zip(X.tolist(), y.tolist()):
        z = [
            sum(w * v for w, v in zip(row, x)) + b
            for row, b in zip([[1, 0, -1], [0.5, 2, 0]], [0.1, -0.2])
        ]
        log_norm = math.log(sum(math.exp(v) for v in z))
        losses.append(log_norm - z[label])
        correct += int(max(range(2), key=lambda c: z[c]) == label)
    model.train()
    for batch_size in (1, 2, 512):
        loss, acc = evaluate(model, X, y, batch_size=batch_size)
        assert abs(loss - sum(losses) / 5) < 1e-6 and acc == correct / 5
    assert model.training  # mode restored


def test_evaluate_errors():
    model = Linear2()
    with pytest.raises(
            ValueError,
            match="X and y must have the same number of samples, got 4 and 3"):
        evaluate(model, torch.zeros(4, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError,
                       match="y must be a 1-D integer tensor of class labels"):
        evaluate(model, torch.zeros(4, 3), torch.zeros(4))
    with pytest.raises(ValueError,
                       match="y has label 2 but the model has num_classes=2"):
        evaluate(model, torch.zeros(2, 3), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="y must hold class labels >= 0"):
        evaluate(model, torch.zeros(2, 3), torch.tensor([0, -1]))
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        evaluate(model, torch.zeros(2, 3), torch.tensor([0, 1]), batch_size=0)


# ------------------------------------------------------------------ batches
def test_batch_stream_covers_every_sample_once_per_epoch():
    stream = _BatchStream(10, 4, torch.Generator().manual_seed(0))
    seen = torch.cat([stream.next() for _ in range(5)])  # 20 indices = two epochs
    assert all(len(b) == 4 for b in [seen[i : i + 4] for i in range(0, 20, 4)])
    assert sorted(seen[:10].tolist()) == list(range(10)) and sorted(
        seen[10:].tolist()) == list(range(10))


# ------------------------------------------------------------------ learning
@pytest.mark.parametrize("optimizer, lr, kernel", [("sgd", 0.3, "softmax"),
                                                   ("adam", 0.01, "gaussian")])
def test_learns_a_token_presence_task(optimizer, lr, kernel):
    X, y = token_problem()
    model = make_model(kernel=kernel)
    history = train_classifier(model, (X, y), (X, y), optimizer=optimizer, lr=lr,
                               steps=150, eval_every=50, batch_size=32, momentum=0.0)
    assert history.status == "max_steps" and history.eval_steps == [0, 50, 100, 150]
    assert len(history.train_loss) == 150 == history.steps_run
    assert history.final_test_acc > 0.9, history.test_acc
    assert history.test_loss[-1] < 0.5 * history.test_loss[0]
    assert history.seconds > 0 and history.message == "ran all 150 steps"


def test_eval_schedule_and_train_eval_subset():
    X, y = token_problem(64)
    history = train_classifier(make_model(), (X, y), (X[:10], y[:10]), steps=7,
                               eval_every=3, batch_size=16, train_eval_size=20)
    assert history.eval_steps == [0, 3, 6, 7]
    assert len(history.train_loss_at_eval) == 4 == len(history.train_acc_at_eval)
    assert len(history.grad_norm) == 7 == len(history.train_acc)
    only_initial = train_classifier(make_model(), (X, y), (X, y), steps=0)
    assert only_initial.eval_steps == [
        0
    ] and only_initial.train_loss == [] and only_initial.status == "max_steps"


def test_determinism_and_rng_isolation():
    X, y = token_problem(96)
    config = MinibatchConfig(optimizer="adam", lr=1e-2, steps=12, eval_every=4,
                             batch_size=16, seed=5)
    state = torch.random.get_rng_state()
    a = train_classifier(make_model(dropout=0.2), (X, y), (X, y), config)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = train_classifier(make_model(dropout=0.2), (X, y), (X, y), config)
    a.seconds = b.seconds = 0.0
    assert a.to_dict() == b.to_dict()
    c = train_classifier(make_model(dropout=0.2), (X, y), (X, y), config, seed=6)
    assert c.train_loss != a.train_loss


def test_grad_clip_bounds_the_update():
    X, y = token_problem(32)
    model = make_model()
    before = [p.detach().clone() for p in model.parameters()]
    history = train_classifier(model, (X, y), (X, y), lr=1.0, steps=1, batch_size=32,
                               grad_clip=1e-3)
    step = torch.sqrt(
        sum(((p.detach() - q)**2).sum() for p, q in zip(model.parameters(), before)))
    assert history.grad_norm[0] > 1e-3 and abs(float(step) - 1e-3) < 1e-6


def test_learning_rate_warmup_and_cosine_decay():
    flat = MinibatchConfig(lr=0.1, steps=10)
    assert [learning_rate(flat, t) for t in (0, 5, 9)] == [0.1, 0.1, 0.1]
    warm = MinibatchConfig(lr=0.1, steps=10, warmup_steps=4)
    assert [learning_rate(warm, t) for t in range(5)] == pytest.approx(
        [0.025, 0.05, 0.075, 0.1, 0.1])
    cos = MinibatchConfig(lr=0.1, steps=10, warmup_steps=2, decay="cosine")
    assert learning_rate(cos, 2) == pytest.approx(0.1)
    assert learning_rate(cos, 6) == pytest.approx(0.05)  # half way: half the rate
    lrs = [learning_rate(cos, t) for t in range(2, 10)]
    assert all(a > b for a, b in zip(lrs, lrs[1:])) and lrs[-1] < 0.01
    for bad in (dict(warmup_steps=-1), dict(warmup_steps=1.5), dict(decay="linear")):
        with pytest.raises(ValueError, match=next(iter(bad))):
            MinibatchConfig(**bad)


def test_warmup_scales_the_first_update():
    # SGD without momentum: the first update is lr * gradient, so a warm-up of 4
    # steps makes it a quarter of the plain one.
    X, y = token_problem(32)
    moves = []
    for warm in (0, 4):
        model = make_model()
        before = [p.detach().clone() for p in model.parameters()]
        train_classifier(model, (X, y), (X, y), lr=0.5, steps=1, batch_size=32,
                         warmup_steps=warm)
        moves.append(torch.sqrt(sum(((p.detach() - q)**2).sum()
                                    for p, q in zip(model.parameters(), before))))
    assert float(moves[1]) == pytest.approx(float(moves[0]) / 4, rel=1e-4)


def test_callbacks_and_device_argument():
    X, y = token_problem(32)
    calls = []

    def callback(state):
        calls.append(state.step)
        return {
            "param_norm": sum(
                float(p.detach().norm())**2 for p in state.model.parameters())**0.5
        }

    history = train_classifier(make_model(), (X, y), (X, y), steps=4, eval_every=2,
                               batch_size=8, callbacks=[callback], device="cpu")
    assert calls == [0, 2, 4] and len(history.diagnostics["param_norm"]) == 3


# ------------------------------------------------------------------ failures
def test_non_finite_parameters_stop_with_a_warning():
    X, y = token_problem(32)
    model = make_model()
    with torch.no_grad():
        model.head.weight.fill_(float("inf"))
    with pytest.warns(RuntimeWarning,
                      match="training stopped at step 0: the mini-batch loss is nan"):
        history = train_classifier(model, (X, y), (X, y), steps=5, batch_size=8)
    assert history.status == "non_finite" and history.failed and history.steps_run == 0
    with pytest.raises(TrainingError, match="training stopped at step 0"):
        train_classifier(model, (X, y), (X, y), steps=5, batch_size=8,
                         on_failure="raise")


def test_huge_learning_rate_is_reported():
    X, y = token_problem(64)
    with pytest.warns(RuntimeWarning, match="training (diverged|stopped)"):
        history = train_classifier(make_model(), (X, y), (X, y), lr=1e8, steps=50,
                                   batch_size=16)
    assert history.status in ("diverged", "non_finite") and history.steps_run < 50
    with pytest.raises(TrainingError):
        train_classifier(make_model(), (X, y), (X, y), lr=1e8, steps=50, batch_size=16,
                         on_failure="raise")


def test_divergence_is_detected_while_the_loss_is_still_finite():
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(64, 3, generator=g), torch.randint(0, 2, (64,), generator=g)
    torch.manual_seed(0)
    with pytest.warns(RuntimeWarning,
                      match="training diverged at step 1: smoothed loss .* > 100 x"):
        history = train_classifier(Linear2(), (X, y), (X, y), lr=1e4, steps=50,
                                   batch_size=16)
    assert history.status == "diverged" and math.isfinite(
        history.train_loss[-1]) and history.steps_run == 1


def test_train_classifier_errors():
    X, y = token_problem(16)
    model = make_model()
    with pytest.raises(TypeError, match="train must be a pair \\(X, y\\)"):
        train_classifier(model, X, (X, y))
    with pytest.raises(
        ValueError,
        match="test\\[0\\] \\(X\\) and test\\[1\\] \\(y\\) must have the same number",
    ):
        train_classifier(model, (X, y), (X, y[:3]))
    with pytest.raises(
            ValueError,
            match="train labels has label 3 but the model has num_classes=2"):
        train_classifier(model, (X, y * 3), (X, y))
    with pytest.raises(
            ValueError,
            match="batch_size \\(32\\) exceeds the number of training samples \\(16\\)"
    ):
        train_classifier(model, (X, y), (X, y), batch_size=32)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        train_classifier(lambda x: x, (X, y), (X, y), batch_size=4)
    frozen = make_model().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        train_classifier(frozen, (X, y), (X, y), batch_size=4)
    with pytest.raises(TypeError, match="unexpected keyword argument 'learning_rate'"):
        train_classifier(model, (X, y), (X, y), learning_rate=0.1)


# ------------------------------------------------------------------ records, seeds,
# two stages
def test_history_round_trips_through_json():
    X, y = token_problem(32)
    history = train_classifier(make_model(), (X, y), (X, y), steps=3, eval_every=2,
                               batch_size=8)
    data = json.loads(json.dumps(history.to_dict()))
    again = ClassifierHistory.from_dict(data)
    assert again == history
    assert history.smoothed_train_loss(2)[1] == pytest.approx(
        sum(history.train_loss[:2]) / 2)
    with pytest.raises(ValueError, match="unknown ClassifierHistory fields"):
        ClassifierHistory.from_dict({**data, "extra": 1})


def test_run_seeds():
    X, y = token_problem(48)
    config = MinibatchConfig(steps=4, eval_every=2, batch_size=8)
    runs = run_seeds(make_model, (X, y), (X, y), config, seeds=[0, 1, 0])
    assert len(runs) == 3 and [r.config.seed for r in runs] == [0, 1, 0]
    assert runs[0].train_loss == runs[2].train_loss != runs[1].train_loss
    single = train_classifier(make_model(1), (X, y), (X, y), config, seed=1)
    assert single.train_loss == runs[1].train_loss
    with pytest.raises(ValueError, match="seeds must be a non-empty sequence"):
        run_seeds(make_model, (X, y), (X, y), config, seeds=[])


def test_two_stage():
    X, y = token_problem(48)
    stage1 = MinibatchConfig(steps=6, eval_every=3, batch_size=8)
    stage2 = MinibatchConfig(optimizer="adam", lr=1e-3, steps=4, eval_every=2,
                             batch_size=8)
    out = two_stage(make_model, (X, y), (X, y), stage1, stage2, seed=2)
    assert set(out) == {"stage1", "stage1_model", "models", "histories"}
    assert list(out["models"]) == ["softmax", "gaussian"]
    base = out["stage1_model"]
    assert base.kernel == "softmax" and out["models"]["gaussian"].kernel == "gaussian"
    assert all(b.attn.kernel == "gaussian" for b in out["models"]["gaussian"].blocks)
    # Stage 2 starts from the stage-1 weights and leaves them untouched.
    soft = out["histories"]["softmax"]
    assert soft.test_loss[0] == pytest.approx(out["stage1"].test_loss[-1], abs=1e-6)
    assert evaluate(base, X, y)[0] == pytest.approx(out["stage1"].test_loss[-1],
                                                    abs=1e-6)
    assert out["histories"]["gaussian"].test_loss != soft.test_loss
    # Every second stage starts from the same weights and sees the same batches:
    # with the same
    # kernel twice, the two second stages are identical.
    same = two_stage(make_model, (X, y), (X, y), stage1, stage2,
                     kernels=("gaussian", "gaussian_normalized"), seed=2)
    twin = two_stage(make_model, (X, y), (X, y), stage1, stage2, kernels=("gaussian", ),
                     seed=2)
    assert same["histories"]["gaussian"].train_loss == twin["histories"][
        "gaussian"].train_loss
    assert same["histories"]["gaussian"].train_loss == out["histories"][
        "gaussian"].train_loss
    with pytest.raises(ValueError, match="unknown kernel 'cosine'"):
        two_stage(make_model, (X, y), (X, y), stage1, stage2,
                  kernels=("softmax", "cosine"))


def test_two_stage_refuses_to_continue_after_a_failed_first_stage():
    X, y = token_problem(32)
    bad = MinibatchConfig(lr=1e8, steps=30, batch_size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(TrainingError, match="stage 1 failed"):
            two_stage(make_model, (X, y), (X, y), bad,
                      MinibatchConfig(steps=2, batch_size=8))
