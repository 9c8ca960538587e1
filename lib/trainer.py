"""Full-batch gradient descent on any subset of the weights, with a step-by-step
history.

    history = train(model, X, Y, steps=500, lr=0.5, trainable=("W_V",))
    history.loss        # f(theta_t) for t = 0, 1, ..., steps run (step 0 included)
    history.grad_norms  # {"W_V": [||grad_W_V f(theta_t)||_F, ...]}
    history.status      # "max_steps", "tolerance", "diverged" or "non_finite"

Training stops early when the loss reaches ``loss_tol``, when the loss or a gradient
stops being finite, or when the loss exceeds ``divergence_factor`` times its initial
value. The last two are reported with a ``RuntimeWarning`` (or a ``TrainingError`` with
``on_failure="raise"``), never silently. Callbacks add per-step diagnostics (e.g.
lambda_B along the trajectory).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .model import squared_loss
from .training import (
    FAILED,
    CallbackRecorder,
    StoppingRules,
    TrainingError,
    non_finite_message,
    progress_bar,
    report_failure,
    resolve_config,
    trainable_only,
)
from .validation import (
    check_choice,
    check_int,
    check_names,
    check_number,
    check_positive_float,
    check_tensor,
)

__all__ = [
    "GDConfig",
    "History",
    "StepState",
    "TrainingError",
    "train",
    "check_trainable",
    "report_failure",
    "non_finite_message",
    "progress_bar",
]


@dataclass
class GDConfig:
    """Settings of full-batch gradient descent.

    steps: number of GD updates (the history has steps + 1 losses when none stops it
    early).
    lr: step size eta > 0.
    trainable: names of the weight matrices that move; the others stay frozen.
    loss_tol: stop as soon as the loss is <= loss_tol (0 disables it).
    divergence_factor: stop when the loss exceeds this multiple of the initial loss.
    on_failure: "warn" (stop, record the status, issue a RuntimeWarning) or "raise"
    (TrainingError).
    callback_every: call the callbacks every this many steps (and at the step where
    training stops).
    progress: show a tqdm progress bar.
    """

    steps: int = 1000
    lr: float = 0.1
    trainable: tuple[str, ...] = ("W_Q", "W_K", "W_V", "W_O")
    loss_tol: float = 0.0
    divergence_factor: float = 1e6
    on_failure: str = "warn"
    callback_every: int = 1
    progress: bool = False

    def __post_init__(self) -> None:
        self.steps = check_int(self.steps, "steps", minimum=0)
        self.lr = check_positive_float(self.lr, "lr (the step size)")
        if isinstance(self.trainable, str):
            self.trainable = (self.trainable,)
        self.trainable = tuple(self.trainable)
        if not self.trainable:
            raise ValueError("trainable must name at least one weight matrix")
        self.loss_tol = check_number(self.loss_tol, "loss_tol", 0.0)
        self.divergence_factor = check_positive_float(self.divergence_factor,
                                                      "divergence_factor")
        check_choice(self.on_failure, "on_failure", ["warn", "raise"])
        self.callback_every = check_int(self.callback_every, "callback_every",
                                        minimum=1)


@dataclass
class StepState:
    """What a callback sees: the step index, the model at theta_t, f(theta_t) and
    its gradients."""

    step: int
    model: nn.Module
    loss: float
    grads: Mapping[str, torch.Tensor]


Callback = Callable[[StepState], "Mapping[str, float] | None"]


@dataclass
class History:
    """Record of one run. ``loss[t]`` = f(theta_t); ``grad_norms[name][t]`` =
    ||grad_name f(theta_t)||_F."""

    loss: list[float] = field(default_factory=list)
    grad_norms: dict[str, list[float]] = field(default_factory=dict)
    diagnostics: dict[str, list[float]] = field(default_factory=dict)
    diagnostic_steps: list[int] = field(default_factory=list)
    status: str = "running"
    message: str = ""
    config: GDConfig | None = None

    @property
    def steps_run(self) -> int:
        """Number of GD updates performed."""
        return max(len(self.loss) - 1, 0)

    @property
    def final_loss(self) -> float:
        return self.loss[-1]

    @property
    def failed(self) -> bool:
        """True when training diverged or produced non-finite values."""
        return self.status in FAILED

    def contraction_factors(self, f_star: float = 0.0) -> list[float]:
        """Per-step ratios (f(theta_{t+1}) - f*) / (f(theta_t) - f*)."""
        gaps = [value - f_star for value in self.loss]
        return [b / a if a > 0 else float("nan") for a, b in zip(gaps[:-1], gaps[1:])]


def check_trainable(model: nn.Module, trainable: Iterable[str]) -> list[nn.Parameter]:
    """The parameters named in ``trainable``; an unknown or repeated name raises
    ``ValueError``."""
    named = dict(model.named_parameters())
    return [named[name] for name in check_names(model, tuple(trainable), "trainable")]


def train(
    model: nn.Module,
    X: torch.Tensor,
    Y: torch.Tensor,
    config: GDConfig | None = None,
    *,
    callbacks: Sequence[Callback] = (),
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = squared_loss,
    **overrides,
) -> History:
    """Run full-batch GD on ``model`` for the data X: (N, n, D), Y: (N, n, d_out).

    Settings come from ``config`` (a ``GDConfig``) with keyword ``overrides``, e.g.
    ``train(model, X, Y, steps=200, lr=0.5, trainable=("W_V",))``. Frozen weights
    are not changed. Returns a ``History``.
    """
    config = resolve_config(config, overrides, GDConfig)
    check_tensor(X, "X", ndim=3, nonempty=True)
    check_tensor(Y, "Y", ndim=3, nonempty=True)
    if X.shape[0] != Y.shape[0] or X.shape[1] != Y.shape[1]:
        raise ValueError(
            "X (N, n, D) and Y (N, n, d_out) must agree in N and n, got"
            f" {tuple(X.shape)} and {tuple(Y.shape)}"
        )
    names = list(check_names(model, config.trainable, "trainable"))
    history = History(grad_norms={name: [] for name in names}, config=config)
    rules = StoppingRules(config, [config.lr])  # the single model is the case M = 1
    recorder = CallbackRecorder(1)
    with trainable_only(model, names) as params:
        for step in progress_bar(range(config.steps + 1), config.progress,
                                 config.steps + 1):
            loss = loss_fn(model(X), Y)
            grads = torch.autograd.grad(loss, params)
            value = float(loss.detach())
            history.loss.append(value)
            for name, g in zip(names, grads):
                history.grad_norms[name].append(float(torch.linalg.vector_norm(g)))
            grads_finite = all(bool(torch.isfinite(g).all()) for g in grads)
            values = np.array([value])
            decision = rules.decide(step, values, np.array([grads_finite]))
            stops = any(bool(mask[0]) for mask in decision.values())
            if callbacks and math.isfinite(value) and grads_finite and (
                    step % config.callback_every == 0 or stops):
                state = StepState(step, model, value, dict(zip(names, grads)))
                recorder.record(step, state, callbacks, np.array([True]))
            if stops:
                rules.apply(
                    step, values, decision, lambda m: [
                        n for n, g in zip(names, grads)
                        if not bool(torch.isfinite(g).all())
                    ])
                history.status, history.message = rules.status[0], rules.messages[0]
                if history.failed:
                    warnings.warn(history.message, RuntimeWarning, stacklevel=2)
                break
            with torch.no_grad():
                for p, g in zip(params, grads):
                    p.sub_(config.lr * g)
    history.diagnostic_steps, history.diagnostics = recorder.of_model(0)
    return history
