"""The bookkeeping shared by the book's trainers.

``lib.trainer.train`` (full-batch GD of one model), ``lib.batched.train_batched`` (M
models at once) and ``lib.minibatch.train_classifier`` (mini-batch training of a
classifier) are loops over the pieces here:

* statuses (``MAX_STEPS``, ``TOLERANCE``, ``DIVERGED``, ``NON_FINITE``, ...) and their
messages;
* ``resolve_config``: a settings object with keyword overrides;
* ``trainable_only``: a context manager that freezes every weight but the trained ones
and
  restores the ``requires_grad`` flags afterwards (names checked: known, not repeated);
* ``StoppingRules``: the stopping rules of full-batch GD, vectorised over M models (a
single
  model is M = 1): non-finite loss or gradient, divergence, loss tolerance, step budget;
* ``CallbackRecorder``: per-model callback values with masks of which models were
recorded;
* ``report_failure`` / ``report_failures``: a ``RuntimeWarning``, or a ``TrainingError``
with
  ``on_failure="raise"``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .validation import check_names

__all__ = [
    "RUNNING",
    "MAX_STEPS",
    "TOLERANCE",
    "DIVERGED",
    "NON_FINITE",
    "INTERRUPTED",
    "FAILED",
    "TrainingError",
    "resolve_config",
    "trainable_only",
    "progress_bar",
    "non_finite_message",
    "divergence_message",
    "report_failure",
    "report_failures",
    "StoppingRules",
    "CallbackRecorder",
]

RUNNING, MAX_STEPS, TOLERANCE = "running", "max_steps", "tolerance"
DIVERGED, NON_FINITE, INTERRUPTED = "diverged", "non_finite", "interrupted"
#: The statuses of a failed run.
FAILED = (DIVERGED, NON_FINITE)


class TrainingError(RuntimeError):
    """Raised when training diverges or produces non-finite values (with
    ``on_failure="raise"``)."""


def resolve_config(config: object, overrides: Mapping[str, object], cls: type):
    """``config`` (an instance of ``cls``, or None for the defaults) with keyword
    ``overrides``."""
    if config is None:
        return cls(**overrides)
    if not isinstance(config, cls):
        raise TypeError(f"config must be a {cls.__name__}, got {type(config).__name__}")
    return dataclasses.replace(config, **overrides) if overrides else config


@contextlib.contextmanager
def trainable_only(model: nn.Module, names: Sequence[str] | str,
                   what: str = "trainable") -> Iterator[list[nn.Parameter]]:
    """Within the block only the named parameters require gradients; yields them in
    the order of
    ``names`` (checked: at least one, known, none repeated). The flags are restored
    afterwards."""
    names = check_names(model, names, what)
    named = dict(model.named_parameters())
    flags = {name: p.requires_grad for name, p in named.items()}
    try:
        for name, p in named.items():
            p.requires_grad_(name in names)
        yield [named[name] for name in names]
    finally:
        for name, p in named.items():
            p.requires_grad_(flags[name])


def progress_bar(iterable: Iterable[int], enabled: bool, total: int, desc: str = "GD"):
    """Wrap ``iterable`` in a tqdm.auto progress bar when ``enabled``."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False)


def non_finite_message(step: int, loss: float, bad_grads: Sequence[str], lr: float,
                       what: str = "") -> str:
    """Why training stopped on a non-finite loss or gradient. At step 0 no step was
    taken, so the message says that the initial loss or gradient is not finite and
    the step size is not the cause. ``what`` overrides the description of the
    non-finite quantity."""
    if not what:
        what = (f"the loss is {loss}" if not math.isfinite(loss)
                else f"the gradient of {', '.join(bad_grads)} is not finite")
    if step == 0:
        return (
            f"training stopped at step 0: {what} at the initial weights; no step was"
            f" taken, so the step size (lr={lr}) is not the cause: check the data, the"
            " weights and the loss"
        )
    return f"training stopped at step {step}: {what} (lr={lr}; try a smaller step size)"


def divergence_message(
    step: int,
    loss: float,
    factor: float,
    reference: float,
    lr: object,
    what: str = "loss",
    reference_what: str = "initial loss",
) -> str:
    """Why training stopped as diverged: ``what`` exceeded ``factor`` x the
    reference value."""
    return (
        f"training diverged at step {step}: {what} {loss:.3e} > {factor:g} x"
        f" {reference_what} {reference:.3e} (lr={lr}; try a smaller step size)"
    )


def report_failure(history: object, config: object, status: str, message: str) -> None:
    """Record a failed run on ``history`` (its ``status`` and ``message``) and
    report it: a
    ``RuntimeWarning``, or a ``TrainingError`` when ``config.on_failure == "raise"``."""
    history.status = status
    history.message = message
    if config.on_failure == "raise":
        raise TrainingError(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def report_failures(status: Sequence[str], messages: Sequence[str],
                    stacklevel: int = 3) -> None:
    """One ``RuntimeWarning`` naming every failed model of a batched run (nothing if
    none failed)."""
    failed = [m for m, s in enumerate(status) if s in FAILED]
    if failed:
        shown = "; ".join(f"model {m}: {messages[m]}" for m in failed[:10])
        more = f"; ... and {len(failed) - 10} more" if len(failed) > 10 else ""
        warnings.warn(f"{len(failed)} of {len(status)} models failed ({shown}{more})",
                      RuntimeWarning, stacklevel=stacklevel)


class StoppingRules:
    """The stopping rules of full-batch gradient descent for M models at once.

    At each step the losses ``values`` (M,) and whether each model's gradients are
    finite are checked for the models still training (``active``), in this order: a
    non-finite loss or gradient (status ``NON_FINITE``), a loss above
    ``divergence_factor`` x the initial loss (``DIVERGED``), a loss <= ``loss_tol``
    (``TOLERANCE``), the last step (``MAX_STEPS``). A model that stops gets its
    status, message and ``stopped_at`` step and is no longer active.
    ``config``: an object with steps, loss_tol, divergence_factor and on_failure
    (``GDConfig``).
    """

    def __init__(self, config: object, lrs: Sequence[float]) -> None:
        self.config = config
        self.lrs = list(lrs)
        M = len(self.lrs)
        self.M = M
        self.active = np.ones(M, dtype=bool)
        self.status = [RUNNING] * M
        self.messages = [""] * M
        self.stopped_at = np.full(M, -1, dtype=np.int64)
        self.initial: np.ndarray | None = None
        self.threshold = np.empty(M)

    def decide(self, step: int, values: np.ndarray,
               grads_finite: np.ndarray) -> dict[str, np.ndarray]:
        """The masks (M,) of the models that stop at this step, by rule (nothing
        is recorded)."""
        if self.initial is None:
            self.initial = values.copy()
            self.threshold = self.config.divergence_factor * np.maximum(
                self.initial, 1e-300)
        acting = self.active
        finite = np.isfinite(values) & grads_finite
        with np.errstate(invalid="ignore"):
            diverged = acting & finite & (values > self.threshold)
            reached = acting & finite & ~diverged & (values <= self.config.loss_tol)
        non_finite = acting & ~finite
        maxed = acting & finite & ~diverged & ~reached & (step == self.config.steps)
        return {
            NON_FINITE: non_finite,
            DIVERGED: diverged,
            TOLERANCE: reached,
            MAX_STEPS: maxed
        }

    def apply(self, step: int, values: np.ndarray, decision: Mapping[str, np.ndarray],
              bad_grads: Callable[[int], list[str]]) -> np.ndarray:
        """Record the decision of ``decide``: statuses, messages,
        ``stopped_at``; raise a
        ``TrainingError`` at the first failure with ``on_failure="raise"``.
        Returns the mask of the models that stopped at this step (they are no
        longer active)."""
        config = self.config
        for m in np.flatnonzero(decision[NON_FINITE]):
            self.messages[m] = non_finite_message(step, float(values[m]), bad_grads(m),
                                                  self.lrs[m])
        for m in np.flatnonzero(decision[DIVERGED]):
            self.messages[m] = divergence_message(step, values[m],
                                                  config.divergence_factor,
                                                  self.initial[m], self.lrs[m])
        for m in np.flatnonzero(decision[TOLERANCE]):
            self.messages[m] = (
                f"loss {values[m]:.3e} <= loss_tol {config.loss_tol:g} at step {step}"
            )
        for m in np.flatnonzero(decision[MAX_STEPS]):
            self.messages[m] = f"ran all {config.steps} steps"
        stopping = np.zeros(self.M, dtype=bool)
        for status, mask in decision.items():
            for m in np.flatnonzero(mask):
                self.status[m] = status
            stopping |= mask
        self.stopped_at[stopping] = step
        failures = np.flatnonzero(decision[NON_FINITE] | decision[DIVERGED])
        if len(failures) and config.on_failure == "raise":
            if self.M == 1:
                raise TrainingError(self.messages[0])
            detail = "; ".join(f"model {m}: {self.messages[m]}" for m in failures)
            raise TrainingError(f"{len(failures)} of {self.M} models failed: {detail}")
        self.active = self.active & ~stopping
        return stopping


class CallbackRecorder:
    """Callback values of M models: rows of (M,) values with masks of the recorded
    models.

    ``record(step, state, callbacks, recorded)`` calls every callback on ``state``;
    each returns {key: value per model} (a scalar counts for every model). Values of
    models not in
    ``recorded`` are stored as NaN and masked out; keys a callback does not return
    at a step are masked out for that step.
    """

    def __init__(self, M: int) -> None:
        self.M = M
        self.steps: list[int] = []
        self.recorded: list[np.ndarray] = []
        self.rows: dict[str, list[np.ndarray]] = {}
        self.masks: dict[str, list[np.ndarray]] = {}

    def _as_row(self, value: object, key: str) -> np.ndarray:
        if isinstance(value, torch.Tensor):
            value = value.detach().to("cpu", torch.float64).numpy()
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim == 0:
            arr = np.full(self.M, float(arr))
        if arr.shape != (self.M,):
            raise ValueError(
                f"callback value {key!r} must have shape ({self.M},) (one value per"
                f" model), got {arr.shape}"
            )
        return arr

    def record(self, step: int, state: object, callbacks: Sequence[Callable],
               recorded: np.ndarray) -> None:
        row = len(self.steps)
        self.steps.append(step)
        self.recorded.append(np.asarray(recorded, dtype=bool).copy())
        for callback in callbacks:
            for key, item in (callback(state) or {}).items():
                arr = self._as_row(item, key)
                if key not in self.rows:
                    self.rows[key] = [np.full(self.M, np.nan)] * row
                    self.masks[key] = [np.zeros(self.M, dtype=bool)] * row
                self.rows[key].append(np.where(recorded, arr, np.nan))
                self.masks[key].append(recorded.copy())
        for key in self.rows:  # keys no callback returned this time
            if len(self.rows[key]) < row + 1:
                self.rows[key].append(np.full(self.M, np.nan))
                self.masks[key].append(np.zeros(self.M, dtype=bool))

    def values(self) -> dict[str, np.ndarray]:
        """{key: (records, M) array}, NaN where a model was not recorded."""
        return {key: np.stack(rows) for key, rows in self.rows.items()}

    def mask(self) -> dict[str, np.ndarray]:
        """{key: (records, M) bool array} of the recorded entries."""
        return {key: np.stack(rows) for key, rows in self.masks.items()}

    def of_model(self, m: int) -> tuple[list[int], dict[str, list[float]]]:
        """Model m's record: (the steps at which it was recorded, {key: its values})."""
        steps = [s for s, rec in zip(self.steps, self.recorded) if rec[m]]
        values = {}
        for key, rows in self.rows.items():
            mask = np.stack(self.masks[key])[:, m]
            if mask.any():
                values[key] = np.stack(rows)[mask, m].tolist()
        return steps, values
