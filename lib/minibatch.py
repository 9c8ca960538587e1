"""Mini-batch training of classifiers (SGD or Adam), the real-task sibling of
``lib.trainer``.

    config = MinibatchConfig(optimizer="sgd", lr=0.1, batch_size=32, steps=2000,
    eval_every=100) history = train_classifier(model, (X_train, y_train), (X_test,
    y_test), config) history.eval_steps, history.test_loss, history.test_acc   # at
    step 0, every eval_every, the end history.train_loss
    # one mini-batch loss per update history.status
    # "max_steps", "diverged", "non_finite"

Mini-batches come from a seeded ``torch.Generator``: the training set is shuffled once
per epoch and cut into consecutive batches (an epoch's leftover starts the next batch,
so every batch has
``batch_size`` samples and no sample is dropped). Data stay where they are (e.g. large
CPU tensors) and are moved to the model's device one batch at a time. A non-finite loss
or gradient, or a smoothed training loss above ``divergence_factor`` times its
reference, stops training with a
``RuntimeWarning`` (or a ``lib.trainer.TrainingError`` with ``on_failure="raise"``),
never silently. On the CPU a run is a deterministic function of the model's initial
weights and ``seed``.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import set_seed
from .attention import get_kernel
from .training import (
    FAILED,
    INTERRUPTED,
    MAX_STEPS,
    NON_FINITE,
    DIVERGED,
    TrainingError,
    divergence_message,
    non_finite_message,
    progress_bar,
    report_failure,
    resolve_config,
)
from .validation import (
    check_choice,
    check_int,
    check_number,
    check_positive_float,
    check_positive_int,
    check_seed,
)

__all__ = [
    "MinibatchConfig",
    "ClassifierHistory",
    "EvalState",
    "OPTIMIZERS",
    "evaluate",
    "learning_rate",
    "train_classifier",
    "run_seeds",
    "two_stage",
    "TrainingError",
]

OPTIMIZERS = ("sgd", "adam", "adamw")
EMA_DECAY = 0.9  # smoothing of the training loss for the divergence test


@dataclass
class MinibatchConfig:
    """Settings of mini-batch training.

    optimizer: "sgd" (with optional momentum), "adam" (L2 weight decay) or "adamw"
    (decoupled).
    lr: learning rate > 0. momentum: SGD momentum in [0, 1). weight_decay: >= 0.
    betas: Adam's (beta1, beta2), each in [0, 1).
    batch_size: samples per update (at most the training-set size).
    steps: number of updates (0: only the initial evaluation).
    eval_every: evaluate the test set at step 0, every eval_every updates, and after
    the last one.
    eval_batch_size: batch size of the evaluation passes (memory only; results do
    not depend on it).
    train_eval_size: if > 0, also evaluate on a fixed random subset of this many
    training samples
        at each evaluation (``train_loss_at_eval``, ``train_acc_at_eval``).
    grad_clip: clip the global gradient norm to this value (None: no clipping).
    warmup_steps: raise the learning rate linearly from lr / warmup_steps to lr over
    the first warmup_steps updates (0: constant from the start).
    decay: "none" (constant after the warm-up) or "cosine" (after the warm-up, down
    towards 0 at the last step along half a cosine).
    seed: seed of the batch order, of dropout and of the train-evaluation subset.
    progress: show a tqdm progress bar.
    on_failure: "warn" (stop, record the status, issue a RuntimeWarning) or "raise"
    (TrainingError).
    divergence_factor: stop with status "diverged" when the smoothed training loss
    (exponential
        moving average, decay 0.9) exceeds this multiple of max(first mini-batch loss,
        log(num_classes)), the loss of chance-level guessing. The default 100 (a mean
        cross-entropy above 69 for two classes) only catches runaway training.
    """

    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    batch_size: int = 32
    steps: int = 1000
    eval_every: int = 100
    eval_batch_size: int = 512
    train_eval_size: int = 0
    grad_clip: float | None = None
    warmup_steps: int = 0
    decay: str = "none"
    seed: int = 0
    progress: bool = False
    on_failure: str = "warn"
    divergence_factor: float = 100.0

    def __post_init__(self) -> None:
        if not isinstance(self.optimizer, str):
            raise TypeError(
                f"optimizer must be a str, one of {list(OPTIMIZERS)}, got"
                f" {type(self.optimizer).__name__}"
            )
        check_choice(self.optimizer, "optimizer", OPTIMIZERS)
        self.lr = check_positive_float(self.lr, "lr (the learning rate)")
        self.momentum = check_number(self.momentum, "momentum", 0.0, 1.0,
                                     high_open=True)
        if self.momentum and self.optimizer != "sgd":
            raise ValueError(
                "momentum applies to optimizer='sgd' only (Adam uses betas), got"
                f" {self.momentum}"
            )
        self.weight_decay = check_number(self.weight_decay, "weight_decay", 0.0,
                                         math.inf)
        if isinstance(self.betas,
                      (str, bytes)) or not hasattr(self.betas, "__len__") or len(
                          self.betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {self.betas!r}")
        self.betas = tuple(
            check_number(b, f"betas[{i}]", 0.0, 1.0, high_open=True)
            for i, b in enumerate(self.betas))
        check_positive_int(self.batch_size, "batch_size")
        check_int(self.steps, "steps", 0)
        check_positive_int(self.eval_every, "eval_every")
        check_positive_int(self.eval_batch_size, "eval_batch_size")
        check_int(self.train_eval_size, "train_eval_size", 0)
        check_int(self.warmup_steps, "warmup_steps", 0)
        check_choice(self.decay, "decay", ["none", "cosine"])
        if self.grad_clip is not None:
            self.grad_clip = check_positive_float(self.grad_clip, "grad_clip")
        check_seed(self.seed)
        if not isinstance(self.progress, bool):
            raise TypeError(f"progress must be True or False, got {self.progress!r}")
        check_choice(self.on_failure, "on_failure", ["warn", "raise"])
        self.divergence_factor = check_positive_float(self.divergence_factor,
                                                      "divergence_factor")
        if self.divergence_factor <= 1:
            raise ValueError(
                f"divergence_factor must be > 1, got {self.divergence_factor}")


@dataclass
class EvalState:
    """What a callback sees at each evaluation: the step, the model and the test
    metrics so far."""

    step: int
    model: nn.Module
    test_loss: float
    test_acc: float
    history: "ClassifierHistory"


Callback = Callable[[EvalState], "Mapping[str, float] | None"]


@dataclass
class ClassifierHistory:
    """Record of one mini-batch run.

    eval_steps[i]: number of updates before evaluation i; test_loss[i], test_acc[i]:
    mean cross-entropy and accuracy on the test set there (train_*_at_eval likewise
    on the training subset, when ``train_eval_size`` > 0). train_loss[t],
    train_acc[t], grad_norm[t]: loss, accuracy and gradient norm (before clipping)
    of the mini-batch of update t, at the weights before that update.
    diagnostics[key][i]: what the callbacks returned at evaluation i.
    seconds: wall-clock time of the run, evaluations included.
    """

    eval_steps: list[int] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    train_loss_at_eval: list[float] = field(default_factory=list)
    train_acc_at_eval: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    diagnostics: dict[str, list[float]] = field(default_factory=dict)
    status: str = "running"
    message: str = ""
    seconds: float = 0.0
    config: MinibatchConfig | None = None

    @property
    def steps_run(self) -> int:
        """Number of updates performed."""
        # A failed step records its mini-batch loss but performs no update.
        return len(self.train_loss) - (1 if self.failed and self.train_loss else 0)

    @property
    def failed(self) -> bool:
        """True when training diverged or produced non-finite values."""
        return self.status in FAILED

    @property
    def final_test_acc(self) -> float:
        return self.test_acc[-1]

    @property
    def final_test_loss(self) -> float:
        return self.test_loss[-1]

    def smoothed_train_loss(self, window: int = 50) -> list[float]:
        """Running mean of ``train_loss`` over the last ``window`` updates
        (shorter at the start)."""
        check_positive_int(window, "window")
        out, total = [], 0.0
        for t, value in enumerate(self.train_loss):
            total += value
            if t >= window:
                total -= self.train_loss[t - window]
            out.append(total / min(t + 1, window))
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain (JSON-serialisable) dict; ``ClassifierHistory.from_dict``
        inverts it."""
        data = dataclasses.asdict(self)
        if self.config is not None:
            data["config"]["betas"] = list(self.config.betas)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ClassifierHistory":
        data = dict(data)
        config = data.pop("config", None)
        if config is not None:
            config = dict(config)
            config["betas"] = tuple(config["betas"])
            config = MinibatchConfig(**config)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown ClassifierHistory fields: {sorted(unknown)}")
        return cls(config=config, **data)


# --------------------------------------------------------------------------- helpers
def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    raise ValueError("the model has no parameters")


def _check_split(data: object, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(
            f"{name} must be a pair (X, y) of tensors, got {type(data).__name__}")
    X, y = data
    return _check_xy(X, y, f"{name}[0] (X)", f"{name}[1] (y)")


def _check_xy(X: object, y: object, xname: str = "X",
              yname: str = "y") -> tuple[torch.Tensor, torch.Tensor]:
    for t, n in ((X, xname), (y, yname)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{n} must be a torch.Tensor, got {type(t).__name__}")
    if X.dim() < 1 or X.shape[0] == 0:
        raise ValueError(
            f"{xname} must have at least one sample (first axis), got shape"
            f" {tuple(X.shape)}"
        )
    if y.dim() != 1 or y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
        raise TypeError(
            f"{yname} must be a 1-D integer tensor of class labels, got {y.dtype}"
            f" {tuple(y.shape)}"
        )
    if y.shape[0] != X.shape[0]:
        raise ValueError(
            f"{xname} and {yname} must have the same number of samples, got"
            f" {X.shape[0]} and {y.shape[0]}"
        )
    if int(y.min()) < 0:
        raise ValueError(f"{yname} must hold class labels >= 0, found {int(y.min())}")
    return X, y


def _check_labels(model: nn.Module, y: torch.Tensor, name: str) -> None:
    num_classes = getattr(model, "num_classes", None)
    if num_classes is not None and int(y.max()) >= num_classes:
        raise ValueError(
            f"{name} has label {int(y.max())} but the model has"
            f" num_classes={num_classes}"
        )


def _batch(X: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, device: torch.device):
    if idx.device != X.device:
        idx = idx.to(X.device)
    xb, yb = X[idx], y[idx.to(y.device)]
    return xb.to(device, non_blocking=True), yb.to(device, non_blocking=True).long()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int = 512,
    device: torch.device | str | None = None,
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` on X: (N, ...), y: (N,) class labels.

    Runs in eval mode without gradients, ``batch_size`` samples at a time, on
    ``device`` (default: the model's); the model's train/eval mode is restored
    afterwards. A non-finite logit gives a non-finite loss (reported, not raised).
    """
    X, y = _check_xy(X, y)
    check_positive_int(batch_size, "batch_size")
    device = _model_device(model) if device is None else torch.device(device)
    _check_labels(model, y, "y")
    was_training = model.training
    model.eval()
    try:
        total = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        N = X.shape[0]
        for start in range(0, N, batch_size):
            xb = X[start : start + batch_size].to(device, non_blocking=True)
            yb = y[start : start + batch_size].to(device, non_blocking=True).long()
            logits = model(xb)
            total += F.cross_entropy(logits.float(), yb, reduction="sum").double()
            correct += (logits.argmax(dim=-1) == yb).sum()
        return float(total) / N, int(correct) / N
    finally:
        model.train(was_training)


class _BatchStream:
    """Consecutive slices of a stream of seeded random permutations of range(N)."""

    def __init__(self, N: int, batch_size: int, generator: torch.Generator):
        self.N, self.batch_size, self.gen = N, batch_size, generator
        self.buffer = torch.empty(0, dtype=torch.long)

    def next(self) -> torch.Tensor:
        while self.buffer.numel() < self.batch_size:
            self.buffer = torch.cat(
                [self.buffer, torch.randperm(self.N, generator=self.gen)])
        idx, self.buffer = self.buffer[:self.batch_size], self.buffer[self.batch_size:]
        return idx


def learning_rate(config: MinibatchConfig, step: int) -> float:
    """The learning rate of update ``step`` (0-based) under ``config``'s warm-up
    and decay."""
    lr, warm = config.lr, config.warmup_steps
    if step < warm:
        return lr * (step + 1) / warm
    if config.decay == "cosine":
        span = max(config.steps - warm, 1)
        return 0.5 * lr * (1 + math.cos(math.pi * min(step - warm, span) / span))
    return lr


def _make_optimizer(config: MinibatchConfig,
                    params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, betas=config.betas,
                                weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, betas=config.betas,
                             weight_decay=config.weight_decay)


# --------------------------------------------------------------------------- training
def train_classifier(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    config: MinibatchConfig | None = None,
    *,
    callbacks: Sequence[Callback] = (),
    device: torch.device | str | None = None,
    **overrides,
) -> ClassifierHistory:
    """Train ``model`` (inputs -> logits (B, C)) with mini-batch cross-entropy;
    returns a ``ClassifierHistory``.

    train, test: pairs (X, y), X: (N, ...) any tensor the model takes, y: (N,)
    integer labels. Settings come from ``config`` with keyword ``overrides`` (e.g.
    ``steps=500, lr=0.05``).
    ``device``: move the model there first (default: leave it where it is). Only
    parameters with
    ``requires_grad`` are trained. Callbacks are called at every evaluation with an
    ``EvalState`` and may return a dict of numbers, stored in ``history.diagnostics``.
    """
    config = resolve_config(config, overrides, MinibatchConfig)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    X_tr, y_tr = _check_split(train, "train")
    X_te, y_te = _check_split(test, "test")
    _check_labels(model, y_tr, "train labels")
    _check_labels(model, y_te, "test labels")
    N = X_tr.shape[0]
    if config.batch_size > N:
        raise ValueError(
            f"batch_size ({config.batch_size}) exceeds the number of training samples"
            f" ({N})"
        )
    if device is not None:
        model.to(torch.device(device))
    device = _model_device(model)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(
            "the model has no trainable parameters (requires_grad is False everywhere)")

    history = ClassifierHistory(config=config)
    optimizer = _make_optimizer(config, params)
    scheduled = config.warmup_steps > 0 or config.decay != "none"
    stream = _BatchStream(N, config.batch_size,
                          torch.Generator().manual_seed(config.seed))
    train_eval = None
    if config.train_eval_size:
        gen = torch.Generator().manual_seed(config.seed + 1_000_003)
        idx = torch.randperm(N, generator=gen)[: config.train_eval_size].sort().values
        train_eval = (X_tr[idx.to(X_tr.device)], y_tr[idx.to(y_tr.device)])
    num_classes = getattr(model, "num_classes", None)
    ema, reference = None, None
    was_training = model.training
    cuda_devices = []
    if device.type == "cuda":
        cuda_devices = [
            device.index if device.index is not None else torch.cuda.current_device()
        ]
    start = time.perf_counter()

    def run_evaluation(step: int) -> None:
        loss, acc = evaluate(model, X_te, y_te, batch_size=config.eval_batch_size,
                             device=device)
        history.eval_steps.append(step)
        history.test_loss.append(loss)
        history.test_acc.append(acc)
        if train_eval is not None:
            tl, ta = evaluate(model, *train_eval, batch_size=config.eval_batch_size,
                              device=device)
            history.train_loss_at_eval.append(tl)
            history.train_acc_at_eval.append(ta)
        if callbacks:
            state = EvalState(step, model, loss, acc, history)
            for callback in callbacks:
                for key, value in (callback(state) or {}).items():
                    history.diagnostics.setdefault(key, []).append(float(value))

    try:
        with torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(config.seed)  # dropout
            for step in progress_bar(range(config.steps + 1), config.progress,
                                     config.steps + 1, desc="training"):
                if step % config.eval_every == 0 or step == config.steps:
                    run_evaluation(step)
                if step == config.steps:
                    history.status = MAX_STEPS
                    history.message = f"ran all {config.steps} steps"
                    break
                model.train()
                xb, yb = _batch(X_tr, y_tr, stream.next(), device)
                optimizer.zero_grad(set_to_none=True)
                logits = model(xb)
                loss = F.cross_entropy(logits, yb)
                loss.backward()
                grads = [p.grad for p in params if p.grad is not None]
                if grads:
                    norm = torch.linalg.vector_norm(
                        torch.stack([torch.linalg.vector_norm(g) for g in grads]))
                else:
                    norm = torch.zeros((), device=device)
                acc = (logits.detach().argmax(dim=-1) == yb).float().mean()
                value, gnorm, batch_acc = torch.stack(
                    [loss.detach().float(), norm.float(), acc]).tolist()
                history.train_loss.append(value)
                history.train_acc.append(batch_acc)
                history.grad_norm.append(gnorm)
                lr = f"{config.lr}, optimizer={config.optimizer}"
                if not math.isfinite(value) or not math.isfinite(gnorm):
                    what = f"the mini-batch loss is {value}" if not math.isfinite(
                        value) else "a gradient is not finite"
                    report_failure(history, config, NON_FINITE,
                                   non_finite_message(step, value, [], lr, what))
                    break
                if ema is None:
                    ema = value
                    reference = max(
                        value,
                        math.log(num_classes if num_classes else logits.shape[-1]))
                else:
                    ema = EMA_DECAY * ema + (1 - EMA_DECAY) * value
                if ema > config.divergence_factor * reference:
                    report_failure(
                        history, config, DIVERGED,
                        divergence_message(
                            step, ema, config.divergence_factor, reference, lr,
                            what="smoothed loss", reference_what=
                            "max(first loss, log of the number of classes)"))
                    break
                if config.grad_clip is not None and gnorm > config.grad_clip:
                    scale = config.grad_clip / (gnorm + 1e-12)
                    for g in grads:
                        g.mul_(scale)
                if scheduled:
                    for group in optimizer.param_groups:
                        group["lr"] = learning_rate(config, step)
                optimizer.step()
    finally:
        model.train(was_training)
        history.seconds = time.perf_counter() - start
        if history.status == "running":
            history.status = INTERRUPTED
            history.message = history.message or "training was interrupted"
    return history


def run_seeds(
    make_model: Callable[[int], nn.Module],
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    config: MinibatchConfig,
    seeds: Sequence[int],
    **kw,
) -> list[ClassifierHistory]:
    """One run per seed: ``lib.set_seed(seed)``, ``model = make_model(seed)``, then
    ``train_classifier(model, train, test, config with seed=seed, **kw)``. The seed
    fixes the model's initialisation (through ``make_model`` and the global
    generators) and the batch order."""
    if isinstance(seeds, int) or not len(seeds):
        raise ValueError(
            f"seeds must be a non-empty sequence of integers, got {seeds!r}")
    histories = []
    for seed in seeds:
        set_seed(seed)
        model = make_model(seed)
        histories.append(
            train_classifier(model, train, test, dataclasses.replace(config, seed=seed),
                             **kw))
    return histories


def two_stage(
    make_model: Callable[[int], nn.Module],
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    stage1: MinibatchConfig,
    stage2: MinibatchConfig,
    kernels: Sequence[str] = ("softmax", "gaussian"),
    stage1_kernel: str = "softmax",
    seed: int = 0,
    **kw,
) -> dict[str, Any]:
    """Two-stage training: a common first stage, then a second stage per attention
    kernel.

    Stage 1 trains ``make_model(seed)`` with ``stage1_kernel``. For each kernel, a
    deep copy of the stage-1 model switches to that kernel (``set_kernel``) and
    trains with ``stage2``; every second stage uses the same batch order (``seed``),
    so the runs differ only in the kernel. Returns {"stage1": history,
    "stage1_model": model, "models": {kernel: model}, "histories": {kernel:
    history}}. A failed first stage raises ``TrainingError``.
    """
    if isinstance(kernels, str) or not len(kernels):
        raise ValueError(
            f"kernels must be a non-empty sequence of kernel names, got {kernels!r}")
    set_seed(seed)
    model = make_model(seed)
    if not callable(getattr(model, "set_kernel", None)):
        raise TypeError(
            "two_stage needs a model with a set_kernel method, got"
            f" {type(model).__name__}"
        )
    for name in (stage1_kernel, *kernels):
        get_kernel(name)  # an unknown name fails before any training
    model.set_kernel(stage1_kernel)
    first = train_classifier(model, train, test, dataclasses.replace(stage1, seed=seed),
                             **kw)
    if first.failed:
        raise TrainingError(
            f"stage 1 failed ({first.status}): {first.message}; stage 2 cannot start"
            " from it"
        )
    models, histories = {}, {}
    for name in kernels:
        m = copy.deepcopy(model)
        m.set_kernel(name)
        histories[name] = train_classifier(m, train, test,
                                           dataclasses.replace(stage2, seed=seed), **kw)
        models[name] = m
    return {
        "stage1": first,
        "stage1_model": model,
        "models": models,
        "histories": histories
    }
