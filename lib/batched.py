"""Training many independent attention layers at once: full-batch GD on every model of a
``lib.batched_model.BatchedAttentionLayer`` in one computation.

The seed studies of the book (how often does a kernel reach the global optimum? how does
the rate depend on the step size?) train the same small layer from dozens of
initialisations. Training them one at a time with ``lib.trainer.train`` costs one
Python-level step per model and per iteration; here the M models are stacked along a
leading axis and every GD step is a single set of batched tensor operations for all of
them.

    model = BatchedAttentionLayer(64, D=8, seeds=range(64))       # 64 copies of
    AttentionLayer history = train_batched(model, X, Y, steps=200, lr=0.01)      #
    X: (N, n, D) or (64, N, n, D) history.loss          # (steps_run + 1, 64) numpy
    array, NaN after a model stopped history.run(3)        # model 3's record as a
    lib.trainer.History train_batched(model, X, Y, steps=200, lr=[0.01, 0.02, ...])
    # one step size per model

Model m follows the trajectory ``lib.trainer.train`` produces for
``AttentionLayer(..., seed=seeds[m], qk_scale=qk_scale[m])`` up to floating-point
rounding (the sums are evaluated in a different order; the tests require agreement to
1e-10 in float64), including the stopping rules, which act per model
(``lib.training.StoppingRules``): a model that reaches ``loss_tol``, diverges or
produces non-finite values is frozen from that step on while the others continue. On the
CPU with short sequences the gradients are the hand-derived ones of the broadcast layout
(``BatchedAttentionLayer._broadcast_loss_and_grads``), elsewhere autograd's.

The model itself lives in ``lib.batched_model``; its names are re-exported here.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from .batched_model import (
    IMPLEMENTATIONS,
    BatchedAttentionLayer,
    _per_model_floats,
    check_data,
    model_index,
    per_model_loss,
    squared_losses,
)
from .model import AttentionLayer
from .trainer import GDConfig, History
from .training import (
    FAILED,
    CallbackRecorder,
    StoppingRules,
    progress_bar,
    report_failures,
    resolve_config,
    trainable_only,
)
from .validation import check_positive_float

__all__ = [
    "BatchedAttentionLayer",
    "BatchedStepState",
    "BatchedHistory",
    "train_batched",
    "train_layers",
    "per_model_loss",
    "squared_losses",
    "IMPLEMENTATIONS",
]


@dataclass
class BatchedStepState:
    """What a batched callback sees at step t.

    model: the batched model at theta_t (all M models; use ``model.layer(m)`` for
    one of them).
    loss: (M,) tensor of f_m(theta_t). grads: {name: (M, ...) gradient tensor}.
    active: (M,) bool tensor, the models whose values are recorded at this step
    (still training and finite); a callback may compute values for every model, the
    others are stored as NaN.
    """

    step: int
    model: BatchedAttentionLayer
    loss: torch.Tensor
    grads: Mapping[str, torch.Tensor]
    active: torch.Tensor


BatchedCallback = Callable[[BatchedStepState], "Mapping[str, object] | None"]


@dataclass
class BatchedHistory:
    """Record of a batched run of M models.

    loss: (steps_run + 1, M) float64 array, ``loss[t, m]`` = f_m(theta_t); NaN after
    model m stopped.
    grad_norms: {name: array like loss} of ||grad_name f_m(theta_t)||_F.
    status, messages: per model, as ``History.status`` / ``History.message`` of
    ``lib.trainer``.
    stopped_at: (M,) int array, the step at which each model stopped (its last
    recorded step).
    lr: (M,) float array of the step sizes.
    diagnostics: {key: (num_records, M) array} from the callbacks (NaN where a model
    was not recorded),
    diagnostic_steps: the step of each record, diagnostic_mask: {key: (num_records,
    M) bool array} telling which entries were recorded.
    config: the settings (with per-model step sizes, ``config.lr`` is the first;
    ``run(m).config`` carries model m's).
    """

    loss: np.ndarray
    grad_norms: dict[str, np.ndarray]
    status: list[str]
    messages: list[str]
    stopped_at: np.ndarray
    lr: np.ndarray
    diagnostics: dict[str, np.ndarray] = field(default_factory=dict)
    diagnostic_steps: list[int] = field(default_factory=list)
    diagnostic_mask: dict[str, np.ndarray] = field(default_factory=dict)
    config: GDConfig | None = None

    @property
    def M(self) -> int:
        return self.loss.shape[1]

    @property
    def steps_run(self) -> int:
        """Number of GD updates of the longest-running model."""
        return self.loss.shape[0] - 1

    @property
    def final_loss(self) -> np.ndarray:
        """(M,) the last recorded loss of every model."""
        return self.loss[self.stopped_at, np.arange(self.M)]

    @property
    def failed(self) -> np.ndarray:
        """(M,) bool: the model diverged or produced non-finite values."""
        return np.array([s in FAILED for s in self.status], dtype=bool)

    @property
    def messages_by_status(self) -> dict[str, list[int]]:
        """{status: [model indices]}."""
        out: dict[str, list[int]] = {}
        for m, s in enumerate(self.status):
            out.setdefault(s, []).append(m)
        return out

    def run(self, m: int) -> History:
        """Model m's record as a ``lib.trainer.History`` (the structure a single
        ``train`` run returns)."""
        m = model_index(m, self.M)
        last = int(self.stopped_at[m]) + 1
        history = History(
            loss=self.loss[:last, m].tolist(),
            grad_norms={
                name: values[:last, m].tolist()
                for name, values in self.grad_norms.items()
            },
            status=self.status[m],
            message=self.messages[m],
            config=dataclasses.replace(self.config, lr=float(self.lr[m]))
            if self.config is not None else None,
        )
        rows = np.zeros(len(self.diagnostic_steps), dtype=bool)
        for mask in self.diagnostic_mask.values():
            rows |= mask[:, m]
        history.diagnostic_steps = [
            s for s, keep in zip(self.diagnostic_steps, rows) if keep
        ]
        for key, values in self.diagnostics.items():
            mask = self.diagnostic_mask[key][:, m]
            if mask.any():
                history.diagnostics[key] = values[mask, m].tolist()
        return history

    def runs(self) -> list[History]:
        """``run(m)`` for every model."""
        return [self.run(m) for m in range(self.M)]


def train_batched(
    model: BatchedAttentionLayer,
    X: torch.Tensor,
    Y: torch.Tensor,
    config: GDConfig | None = None,
    *,
    lr: float | Sequence[float] | torch.Tensor | np.ndarray | None = None,
    callbacks: Sequence[BatchedCallback] = (),
    **overrides,
) -> BatchedHistory:
    """Full-batch GD on every model of ``model`` at once, each on its own loss.

    Model m minimises f_m = 1/(2N) sum_i ||MH_m(X_m,i) - Y_m,i||_F^2; the gradient
    of sum_m f_m (autograd, or the hand-derived gradients of the broadcast layout)
    gives every model its own gradient. X: (N, n, D) shared or (M, N, n, D) per
    model; Y: (N, n, d_out) shared or (M, N, n, d_out).

    Settings: ``config`` / keyword ``overrides`` exactly as for
    ``lib.trainer.train`` (steps, trainable, loss_tol, divergence_factor,
    on_failure, callback_every, progress). ``lr`` is one step size or one per model
    (a step-size sweep; then ``history.lr`` holds them and ``history.config.lr`` is
    only the first). The stopping rules act per model: a model that reaches
    ``loss_tol``, diverges or produces non-finite values is frozen (its updates
    masked) while the others continue; training ends when every model has stopped or
    after ``steps`` updates. Failures are reported by one ``RuntimeWarning`` naming
    the failed models (or a ``TrainingError`` with
    ``on_failure="raise"``, raised at the first failure). Callbacks receive a
    ``BatchedStepState`` and return {key: (M,) values}.
    """
    if not isinstance(model, BatchedAttentionLayer):
        raise TypeError(
            f"model must be a BatchedAttentionLayer, got {type(model).__name__}")
    config = resolve_config(config, overrides, GDConfig)
    M = model.M
    if lr is None:
        lrs = [config.lr] * M
    else:
        lrs = _per_model_floats(lr, M, "lr")
        for value in lrs:
            check_positive_float(value, "lr (the step size)")
        config = dataclasses.replace(config, lr=lrs[0])
    check_data(model, X, Y)
    dtype, device = model.W_Q.dtype, model.W_Q.device
    N = X.shape[-3]
    Yb = Y if Y.dim() == 4 else Y.unsqueeze(0)
    Y_like: torch.Tensor | None = None
    lr_t = torch.tensor(lrs, dtype=dtype, device=device)
    rules = StoppingRules(config, lrs)
    recorder = CallbackRecorder(M)
    loss_rows: list[np.ndarray] = []
    norm_rows: list[np.ndarray] = []
    all_active = True
    active_t = torch.ones(M, dtype=torch.bool, device=device)
    zero = torch.zeros((), dtype=dtype, device=device)

    manual = model._use_broadcast(X)
    if manual:  # hand-derived gradients in the broadcast layout (the fast CPU path)
        Xp = model._prepare(X)
        Yp = Yb.permute(0, 3, 2, 1).contiguous()  # (M or 1, d_out, n, N)
    else:
        evaluate = model._evaluator(X)
    with trainable_only(model, config.trainable) as params:
        names = list(config.trainable)
        shape = [(M,) + (1,) * (p.dim() - 1) for p in params]
        lr_views = [lr_t.view(s) for s in shape]
        masks = [active_t.view(s) for s in shape]
        for step in progress_bar(range(config.steps + 1), config.progress,
                                 config.steps + 1):
            if manual:
                per_model, grad_map = model._broadcast_loss_and_grads(Xp, N, Yp, names)
                grads = tuple(grad_map[name] for name in names)
            else:
                prediction = evaluate()
                if (
                    Y_like is None
                ):  # Y in the memory layout of the predictions (faster elementwise ops)
                    Y_like = torch.empty_like(prediction).copy_(
                        Yb.expand(prediction.shape))
                per_model = squared_losses(prediction, Y_like)  # (M,)
                total = per_model.sum() if all_active else torch.where(
                    active_t, per_model, zero).sum()
                grads = torch.autograd.grad(total, params)
            flat = [g.reshape(M, -1) for g in grads]
            norms_t = torch.stack([torch.linalg.vector_norm(g, dim=1)
                                   for g in flat])  # (P, M)
            summary = torch.cat([per_model.detach().unsqueeze(0),
                                 norms_t]).to("cpu", torch.float64).numpy()
            values, norms = summary[0], summary[1:]
            grads_finite = np.isfinite(norms).all(axis=0)
            if not grads_finite.all(
            ):  # a norm can overflow although every entry is finite: check exactly
                grads_finite = torch.stack([torch.isfinite(g).all(dim=1)
                                            for g in flat]).all(dim=0).cpu().numpy()
            acting = rules.active
            loss_rows.append(np.where(acting, values, np.nan))
            norm_rows.append(np.where(acting[None, :], norms, np.nan))
            decision = rules.decide(step, values, grads_finite)
            stopping = np.logical_or.reduce(list(decision.values()))
            if callbacks:
                on_grid = step % config.callback_every == 0
                recorded = acting & np.isfinite(values) & grads_finite & (on_grid
                                                                          | stopping)
                if recorded.any():
                    state = BatchedStepState(step, model, per_model.detach(),
                                             dict(zip(names, grads)),
                                             torch.as_tensor(recorded, device=device))
                    recorder.record(step, state, callbacks, recorded)
            rules.apply(
                step, values, decision, lambda m: [
                    n for n, g in zip(names, flat)
                    if not bool(torch.isfinite(g[m]).all())
                ])
            if stopping.any():
                if not rules.active.any():
                    break
                all_active = False
                active_t = torch.as_tensor(rules.active, device=device)
                masks = [active_t.view(s) for s in shape]
                lr_eff = torch.where(active_t, lr_t, zero)
                lr_views = [lr_eff.view(s) for s in shape]
            with torch.no_grad():
                if all_active or grads_finite[~rules.active].all():
                    # Stopped models have step size 0 and finite
                    # gradients: p - 0 * g = p leaves them
                    # unchanged; the others get train's update p - lr * g.
                    for p, g, lr_view in zip(params, grads, lr_views):
                        p.sub_(lr_view * g)
                else:  # a stopped model's gradient is not finite: mask it explicitly
                    for p, g, lr_view, mask in zip(params, grads, lr_views, masks):
                        p.sub_(torch.where(mask, lr_view * g, torch.zeros_like(g)))

    norms_all = np.stack(norm_rows) if norm_rows else np.empty((0, len(names), M))
    history = BatchedHistory(
        loss=np.stack(loss_rows),
        grad_norms={
            name: np.ascontiguousarray(norms_all[:, i, :])
            for i, name in enumerate(names)
        },
        status=rules.status,
        messages=rules.messages,
        stopped_at=rules.stopped_at,
        lr=np.array(lrs, dtype=np.float64),
        diagnostics=recorder.values(),
        diagnostic_steps=recorder.steps,
        diagnostic_mask=recorder.mask(),
        config=config,
    )
    report_failures(rules.status, rules.messages)
    return history


def train_layers(
    layers: Sequence[AttentionLayer],
    X: torch.Tensor,
    Y: torch.Tensor,
    config: GDConfig | None = None,
    *,
    impl: str = "auto",
    **kwargs,
) -> tuple[list[AttentionLayer], BatchedHistory]:
    """Train copies of ``layers`` (one model each) in one batched computation.

    ``BatchedAttentionLayer.from_layers(layers, impl)`` trained by
    ``train_batched(model, X, Y, config, **kwargs)`` (X, Y shared or one per layer,
    ``lr`` one or one per layer). Returns (the trained models as new
    ``AttentionLayer`` copies, the ``BatchedHistory``); ``layers`` are unchanged.
    """
    model = BatchedAttentionLayer.from_layers(list(layers), impl=impl)
    history = train_batched(model, X, Y, config, **kwargs)
    return model.layers(), history
