"""Full-batch gradient descent on any subset of the weights, with a step-by-step history.

    history = train(model, X, Y, steps=500, lr=0.5, trainable=("W_V",))
    history.loss        # f(theta_t) for t = 0, 1, ..., steps run (step 0 included)
    history.grad_norms  # {"W_V": [||grad_W_V f(theta_t)||_F, ...]}
    history.status      # "max_steps", "tolerance", "diverged" or "non_finite"

Training stops early when the loss reaches ``loss_tol``, when the loss or a gradient stops being
finite, or when the loss exceeds ``divergence_factor`` times its initial value. The last two are
reported with a ``RuntimeWarning`` (or a ``TrainingError`` with ``on_failure="raise"``), never
silently. Callbacks add per-step diagnostics (e.g. lambda_B along the trajectory).
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from .model import squared_loss
from .validation import check_choice, check_positive_float, check_tensor

__all__ = ["GDConfig", "History", "StepState", "TrainingError", "train", "check_trainable", "report_failure", "progress_bar"]


class TrainingError(RuntimeError):
    """Raised when training diverges or produces non-finite values (with ``on_failure="raise"``)."""


@dataclass
class GDConfig:
    """Settings of full-batch gradient descent.

    steps: number of GD updates (the history has steps + 1 losses when none stops it early).
    lr: step size eta > 0.
    trainable: names of the weight matrices that move; the others stay frozen.
    loss_tol: stop as soon as the loss is <= loss_tol (0 disables it).
    divergence_factor: stop when the loss exceeds this multiple of the initial loss.
    on_failure: "warn" (stop, record the status, issue a RuntimeWarning) or "raise" (TrainingError).
    callback_every: call the callbacks every this many steps (and at the step where training stops).
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
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(f"steps must be a non-negative integer, got {self.steps!r}")
        self.lr = check_positive_float(self.lr, "lr (the step size)")
        if isinstance(self.trainable, str):
            self.trainable = (self.trainable,)
        self.trainable = tuple(self.trainable)
        if not self.trainable:
            raise ValueError("trainable must name at least one weight matrix")
        if isinstance(self.loss_tol, bool) or not isinstance(self.loss_tol, (int, float)) or not self.loss_tol >= 0:
            raise ValueError(f"loss_tol must be a number >= 0, got {self.loss_tol!r}")
        self.divergence_factor = check_positive_float(self.divergence_factor, "divergence_factor")
        check_choice(self.on_failure, "on_failure", ["warn", "raise"])
        if isinstance(self.callback_every, bool) or not isinstance(self.callback_every, int) or self.callback_every < 1:
            raise ValueError(f"callback_every must be a positive integer, got {self.callback_every!r}")


@dataclass
class StepState:
    """What a callback sees: the step index, the model at theta_t, f(theta_t) and its gradients."""

    step: int
    model: nn.Module
    loss: float
    grads: Mapping[str, torch.Tensor]


Callback = Callable[[StepState], "Mapping[str, float] | None"]


@dataclass
class History:
    """Record of one run. ``loss[t]`` = f(theta_t); ``grad_norms[name][t]`` = ||grad_name f(theta_t)||_F."""

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
        return self.status in ("diverged", "non_finite")

    def contraction_factors(self, f_star: float = 0.0) -> list[float]:
        """Per-step ratios (f(theta_{t+1}) - f*) / (f(theta_t) - f*)."""
        gaps = [value - f_star for value in self.loss]
        return [b / a if a > 0 else float("nan") for a, b in zip(gaps[:-1], gaps[1:])]


def check_trainable(model: nn.Module, trainable: Iterable[str]) -> list[nn.Parameter]:
    """The parameters named in ``trainable``; an unknown name raises ``ValueError`` listing the valid ones."""
    named = dict(model.named_parameters())
    params = []
    for name in trainable:
        if name not in named:
            raise ValueError(f"unknown name {name!r} in trainable; valid: {', '.join(named)}")
        params.append(named[name])
    return params


def progress_bar(iterable: Iterable[int], enabled: bool, total: int, desc: str = "GD"):
    """Wrap ``iterable`` in a tqdm.auto progress bar when ``enabled``."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False)


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
    ``train(model, X, Y, steps=200, lr=0.5, trainable=("W_V",))``. Frozen weights are not changed.
    Returns a ``History``.
    """
    if config is None:
        config = GDConfig(**overrides)
    elif overrides:
        config = dataclasses.replace(config, **overrides)
    check_tensor(X, "X", ndim=3)
    check_tensor(Y, "Y", ndim=3)
    if X.shape[0] != Y.shape[0] or X.shape[1] != Y.shape[1]:
        raise ValueError(
            f"X (N, n, D) and Y (N, n, d_out) must agree in N and n, got {tuple(X.shape)} and {tuple(Y.shape)}"
        )
    params = check_trainable(model, config.trainable)
    names = list(config.trainable)
    history = History(grad_norms={name: [] for name in names}, config=config)
    previous_flags = {name: p.requires_grad for name, p in model.named_parameters()}
    for name, p in model.named_parameters():
        p.requires_grad_(name in names)
    initial_loss = None
    try:
        for step in progress_bar(range(config.steps + 1), config.progress, config.steps + 1):
            loss = loss_fn(model(X), Y)
            grads = torch.autograd.grad(loss, params)
            value = float(loss.detach())
            history.loss.append(value)
            finite = math.isfinite(value) and all(bool(torch.isfinite(g).all()) for g in grads)
            for name, g in zip(names, grads):
                history.grad_norms[name].append(float(torch.linalg.vector_norm(g)))
            if initial_loss is None:
                initial_loss = value
            diverged = finite and value > config.divergence_factor * max(initial_loss, 1e-300)
            last = step == config.steps or (finite and (diverged or value <= config.loss_tol))
            if callbacks and finite and (step % config.callback_every == 0 or last):
                state = StepState(step, model, value, dict(zip(names, grads)))
                history.diagnostic_steps.append(step)
                for callback in callbacks:
                    for key, item in (callback(state) or {}).items():
                        history.diagnostics.setdefault(key, []).append(float(item))
            if not finite:
                bad = [n for n, g in zip(names, grads) if not bool(torch.isfinite(g).all())]
                what = f"the loss is {value}" if not math.isfinite(value) else f"the gradient of {', '.join(bad)} is not finite"
                report_failure(history, config, "non_finite", f"training stopped at step {step}: {what} (lr={config.lr})")
                break
            if diverged:
                report_failure(
                    history,
                    config,
                    "diverged",
                    f"training diverged at step {step}: loss {value:.3e} > {config.divergence_factor:g} x initial "
                    f"loss {initial_loss:.3e} (lr={config.lr}; try a smaller step size)",
                )
                break
            if value <= config.loss_tol:
                history.status = "tolerance"
                history.message = f"loss {value:.3e} <= loss_tol {config.loss_tol:g} at step {step}"
                break
            if step == config.steps:
                history.status = "max_steps"
                history.message = f"ran all {config.steps} steps"
                break
            with torch.no_grad():
                for p, g in zip(params, grads):
                    p.sub_(config.lr * g)
    finally:
        for name, p in model.named_parameters():
            p.requires_grad_(previous_flags[name])
    return history


def report_failure(history, config, status: str, message: str) -> None:
    """Record a failed run on ``history`` (its ``status`` and ``message``) and report it: a
    ``RuntimeWarning``, or a ``TrainingError`` when ``config.on_failure == "raise"``."""
    history.status = status
    history.message = message
    if config.on_failure == "raise":
        raise TrainingError(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)
