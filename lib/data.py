"""Seeded synthetic regression problems for the theory chapters.

* ``random_inputs``: token matrices X: (N, n, D) with i.i.d. N(0, scale^2) entries.
* ``teacher_problem``: targets Y = teacher(X) from an attention layer of a given kernel,
so the
  global optimum of a student with the same architecture is zero loss (the targets are
  realisable).
* ``random_problem``: i.i.d. Gaussian targets, in general not realisable.
* ``stacked_random_problems``: one ``random_problem`` per seed, stacked for a batched
model.
* ``batched_teacher_problems``: M attention-only teacher problems for a
  ``lib.batched.BatchedAttentionLayer`` (the student differs from its teacher only in
  W_Q, W_K).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, NamedTuple, Sequence

import torch

from .batched_model import BatchedAttentionLayer
from .device import get_device
from .model import AttentionLayer, LayerSettings
from .validation import (
    check_float_dtype,
    check_positive_float,
    check_positive_int,
    check_seed,
)

__all__ = [
    "random_inputs",
    "random_targets",
    "RegressionProblem",
    "teacher_problem",
    "random_problem",
    "stacked_random_problems",
    "BatchedTeacherProblems",
    "batched_teacher_problems",
]


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(check_seed(seed))


def random_inputs(
    N: int,
    n: int,
    D: int,
    *,
    seed: int = 0,
    scale: float = 1.0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """X: (N, n, D) with i.i.d. N(0, scale^2) entries, drawn from a local generator.

    ``dtype`` must be a floating type (the draws are Gaussian; an integer type would
    truncate them).
    """
    for name, value in (("N", N), ("n", n), ("D", D)):
        check_positive_int(value, name)
    check_positive_float(scale, "scale")
    check_float_dtype(dtype)
    X = torch.randn(N, n, D, generator=_generator(seed), dtype=torch.float64) * scale
    return X.to(dtype=dtype, device=get_device() if device is None else device)


def random_targets(
    N: int,
    n: int,
    d_out: int,
    *,
    seed: int = 0,
    scale: float = 1.0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Y: (N, n, d_out) with i.i.d. N(0, scale^2) entries."""
    return random_inputs(N, n, d_out, seed=seed, scale=scale, dtype=dtype,
                         device=device)


@dataclass
class RegressionProblem:
    """A synthetic problem: X (N, n, D), Y (N, n, d_out), and the teacher that made
    Y (if any)."""

    X: torch.Tensor
    Y: torch.Tensor
    teacher: AttentionLayer | None
    realisable: bool

    @property
    def shape(self) -> dict[str, int]:
        N, n, D = self.X.shape
        return {"N": N, "n": n, "D": D, "d_out": self.Y.shape[-1]}


def teacher_problem(
    N: int,
    n: int,
    D: int,
    *,
    kernel: str = "softmax",
    H: int = 1,
    d: int | None = None,
    d_v: int | None = None,
    d_out: int | None = None,
    seed: int = 0,
    teacher_seed: int | None = None,
    input_scale: float = 1.0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    **teacher_kwargs,
) -> RegressionProblem:
    """Inputs from ``seed`` and targets Y = teacher(X) from a teacher layer (seed
    ``teacher_seed``, default seed + 1) with the given kernel and sizes; extra
    keyword arguments (gamma, init, qk_scale) go to the teacher's
    ``lib.model.LayerSettings``."""
    X = random_inputs(N, n, D, seed=seed, scale=input_scale, dtype=dtype, device=device)
    qk_scale = teacher_kwargs.pop("qk_scale", 1.0)
    settings = LayerSettings(D, H=H, d=d, d_v=d_v, d_out=d_out, kernel=kernel,
                             dtype=dtype, device=X.device, **teacher_kwargs)
    teacher = settings.layer(qk_scale=qk_scale,
                             seed=seed + 1 if teacher_seed is None else teacher_seed)
    with torch.no_grad():
        Y = teacher(X)
    return RegressionProblem(X, Y, teacher, realisable=True)


def random_problem(
    N: int,
    n: int,
    D: int,
    *,
    d_out: int | None = None,
    seed: int = 0,
    input_scale: float = 1.0,
    target_scale: float = 1.0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> RegressionProblem:
    """Inputs and i.i.d. Gaussian targets (seed + 1), in general not realisable."""
    X = random_inputs(N, n, D, seed=seed, scale=input_scale, dtype=dtype, device=device)
    Y = random_targets(N, n, D if d_out is None else d_out, seed=seed + 1,
                       scale=target_scale, dtype=dtype, device=X.device)
    return RegressionProblem(X, Y, None, realisable=False)


def stacked_random_problems(
    seeds: Iterable[int],
    N: int,
    n: int,
    D: int,
    *,
    device: torch.device | str | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One ``random_problem(N, n, D, seed=s)`` per seed, stacked: X (M, N, n, D), Y
    (M, N, n, d_out).

    Extra keyword arguments go to ``random_problem`` (d_out, scales, dtype).
    """
    problems = [
        random_problem(N, n, D, seed=int(s), device=device, **kwargs) for s in seeds
    ]
    if not problems:
        raise ValueError("seeds must contain at least one seed")
    return torch.stack([p.X for p in problems]), torch.stack([p.Y for p in problems])


class BatchedTeacherProblems(NamedTuple):
    """M teacher problems: the batched ``student`` and ``teacher``, X (M, N, n, D),
    Y = teacher(X)."""

    student: BatchedAttentionLayer
    teacher: BatchedAttentionLayer
    X: torch.Tensor
    Y: torch.Tensor


def batched_teacher_problems(
    kernel: str,
    N: int,
    n: int,
    D: int,
    trainable: Sequence[str] | str,
    M: int,
    *,
    gamma: float | None = None,
    init_scale: float = 1.0,
    device: torch.device | str | None = None,
) -> BatchedTeacherProblems:
    """M random one-head teacher problems whose teachers differ from the students
    only in attention.

    Problem m: the student ``AttentionLayer(D, kernel=kernel, seed=m)`` with W_O =
    I, its
    ``trainable`` weights (a subset of W_Q, W_K) multiplied by ``init_scale``; the
    teacher has its own W_Q (and W_K when W_K is trained) from seed 10**6 + m and
    shares the rest with the student. The inputs X (M, N, n, D), i.i.d. N(0, 1) from
    the seed 1000 + 100 N + 10 n + D, depend on the sizes only, so every kernel sees
    the same inputs and starting points. Setting the student's trainable weights to
    the teacher's gives zero loss (the targets are realisable). float64.
    """
    if isinstance(trainable, str):
        trainable = (trainable,)
    trainable = tuple(trainable)
    if not trainable or not set(trainable) <= {"W_Q", "W_K"} or len(
            set(trainable)) != len(trainable):
        raise ValueError(
            f"trainable must be distinct names among 'W_Q', 'W_K', got {trainable!r}")
    for name, value in (("N", N), ("n", n), ("D", D), ("M", M)):
        check_positive_int(value, name)
    init_scale = check_positive_float(init_scale, "init_scale")
    device = get_device() if device is None else torch.device(device)
    gen = torch.Generator().manual_seed(1000 + 100 * N + 10 * n + D)
    X = torch.randn(M, N, n, D, generator=gen, dtype=torch.float64).to(device)
    student = BatchedAttentionLayer(M, D, kernel=kernel, gamma=gamma, seeds=range(M),
                                    device=device)
    teacher = BatchedAttentionLayer(
        M, D, kernel=kernel, gamma=gamma, seeds=range(10**6, 10**6 + M), device=device
    )
    with torch.no_grad():
        student.W_O.copy_(
            torch.eye(D, dtype=torch.float64, device=device).expand(M, D, D))
        for name in trainable:
            getattr(student, name).mul_(init_scale)
        teacher.W_O.copy_(student.W_O)
        teacher.W_V.copy_(student.W_V)
        if "W_K" not in trainable:
            teacher.W_K.copy_(student.W_K)
        Y = teacher(X)
    return BatchedTeacherProblems(student, teacher, X, Y)
