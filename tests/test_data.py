"""Tests of lib.data: seeded synthetic problems."""
from __future__ import annotations

import math

import pytest
import torch

import lib
from lib.data import (
    RegressionProblem,
    random_inputs,
    random_problem,
    random_targets,
    teacher_problem,
)
from lib.model import AttentionLayer, squared_loss
from lib.theory import optimal_values
from reference import DEVICE, F64


def test_random_inputs_shape_dtype_device():
    X = random_inputs(3, 4, 5, seed=1, device=DEVICE)
    assert X.shape == (3, 4, 5) and X.dtype == F64 and X.device.type == "cpu"
    X32 = random_inputs(3, 4, 5, seed=1, dtype=torch.float32, device="cpu")
    assert X32.dtype == torch.float32
    assert torch.equal(X32, X.to(torch.float32))


def test_random_inputs_default_device_is_get_device():
    assert random_inputs(1, 2, 3).device.type == lib.get_device().type


def test_random_inputs_deterministic_per_seed():
    a = random_inputs(2, 3, 4, seed=7, device=DEVICE)
    b = random_inputs(2, 3, 4, seed=7, device=DEVICE)
    c = random_inputs(2, 3, 4, seed=8, device=DEVICE)
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_random_inputs_do_not_touch_the_global_generator():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    random_inputs(2, 3, 4, seed=1, device=DEVICE)
    assert torch.equal(torch.rand(3), expected)


def test_random_inputs_scale():
    a = random_inputs(2, 3, 4, seed=3, device=DEVICE)
    b = random_inputs(2, 3, 4, seed=3, scale=2.5, device=DEVICE)
    assert torch.allclose(b, 2.5 * a, atol=1e-15, rtol=0)
    big = random_inputs(50, 20, 20, seed=4, scale=3.0, device=DEVICE)
    assert float(big.std()) == pytest.approx(3.0, rel=0.03)
    assert abs(float(big.mean())) < 0.05


def test_random_targets():
    Y = random_targets(2, 3, 6, seed=5, scale=0.5, device=DEVICE)
    assert Y.shape == (2, 3, 6)
    assert torch.equal(Y, random_targets(2, 3, 6, seed=5, scale=0.5, device=DEVICE))


@pytest.mark.parametrize("kernel", ["softmax", "gaussian", "gaussian_normalized"])
def test_teacher_problem_is_realisable(kernel):
    problem = teacher_problem(3, 4, 5, kernel=kernel, H=2, d=3, d_out=2, seed=1,
                              device=DEVICE)
    assert isinstance(problem, RegressionProblem) and problem.realisable
    assert problem.X.shape == (3, 4, 5) and problem.Y.shape == (3, 4, 2)
    assert problem.shape == {"N": 3, "n": 4, "D": 5, "d_out": 2}
    teacher = problem.teacher
    assert teacher.kernel == kernel and teacher.H == 2 and teacher.d == 3
    # A student initialised to the teacher has zero loss; a fresh student does not.
    student = AttentionLayer(5, H=2, d=3, d_out=2, kernel=kernel, seed=99,
                             device=DEVICE)
    with torch.no_grad():
        assert float(squared_loss(student(problem.X), problem.Y)) > 1e-3
    student.load_state_dict(teacher.state_dict())
    with torch.no_grad():
        assert float(squared_loss(student(problem.X), problem.Y)) == 0.0


def test_teacher_problem_seeds():
    a = teacher_problem(2, 3, 4, seed=1, device=DEVICE)
    b = teacher_problem(2, 3, 4, seed=1, device=DEVICE)
    assert torch.equal(a.X, b.X) and torch.equal(a.Y, b.Y)
    c = teacher_problem(2, 3, 4, seed=1, teacher_seed=50, device=DEVICE)
    assert torch.equal(a.X, c.X) and not torch.allclose(a.Y, c.Y)
    # default teacher seed = seed + 1
    d = teacher_problem(2, 3, 4, seed=1, teacher_seed=2, device=DEVICE)
    assert torch.equal(a.Y, d.Y)
    e = teacher_problem(2, 3, 4, seed=2, device=DEVICE)
    assert not torch.allclose(a.X, e.X)


def test_teacher_problem_scales_and_kwargs():
    a = teacher_problem(2, 3, 4, seed=1, device=DEVICE)
    b = teacher_problem(2, 3, 4, seed=1, input_scale=3.0, device=DEVICE)
    assert torch.allclose(b.X, 3.0 * a.X, atol=1e-15, rtol=0)
    g = teacher_problem(2, 3, 4, kernel="gaussian", seed=1, gamma=0.2, qk_scale=2.0,
                        init="orthogonal", device=DEVICE)
    assert (
        g.teacher.gamma == 0.2
        and g.teacher.qk_scale == 2.0
        and g.teacher.init == "orthogonal"
    )
    with torch.no_grad():
        assert torch.equal(g.teacher(g.X), g.Y)


def test_random_problem_is_not_realisable():
    problem = random_problem(6, 2, 2, d_out=1, seed=3, device=DEVICE)
    assert not problem.realisable and problem.teacher is None
    assert problem.X.shape == (6, 2, 2) and problem.Y.shape == (6, 2, 1)
    # H*D < N*n: even the best value weights of a student leave a positive loss
    student = AttentionLayer(2, d_out=1, seed=0, device=DEVICE)
    assert optimal_values(student, problem.X, problem.Y).loss > 1e-2


def test_random_problem_defaults_and_scales():
    a = random_problem(2, 3, 4, seed=1, device=DEVICE)
    assert a.Y.shape == (2, 3, 4)  # d_out defaults to D
    assert torch.equal(a.Y, random_targets(2, 3, 4, seed=2,
                                           device=DEVICE))  # targets from seed + 1
    b = random_problem(2, 3, 4, seed=1, input_scale=2.0, target_scale=0.1,
                       device=DEVICE)
    assert torch.allclose(b.X, 2.0 * a.X, atol=1e-15, rtol=0)
    assert torch.allclose(b.Y, 0.1 * a.Y, atol=1e-15, rtol=0)
    c = random_problem(2, 3, 4, seed=1, device=DEVICE)
    assert torch.equal(a.X, c.X) and torch.equal(a.Y, c.Y)


@pytest.mark.parametrize("seed", [-1, 1.5, "0", None, True])
@pytest.mark.parametrize(
    "fn",
    [
        lambda s: random_inputs(1, 2, 3, seed=s),
        lambda s: random_targets(1, 2, 3, seed=s),
        lambda s: teacher_problem(1, 2, 3, seed=s),
        lambda s: random_problem(1, 2, 3, seed=s),
    ],
    ids=["random_inputs", "random_targets", "teacher_problem", "random_problem"],
)
def test_invalid_seed(fn, seed):
    with pytest.raises((ValueError, TypeError),
                       match="seed must be a non-negative integer"):
        fn(seed)


@pytest.mark.parametrize("name", ["N", "n", "D"])
@pytest.mark.parametrize("value,error", [(0, ValueError), (-2, ValueError),
                                         (2.5, TypeError)])
def test_invalid_sizes(name, value, error):
    sizes = {"N": 2, "n": 3, "D": 4, name: value}
    with pytest.raises(error, match=f"{name} must be a positive integer"):
        random_inputs(sizes["N"], sizes["n"], sizes["D"], seed=0)


@pytest.mark.parametrize("scale", [0.0, -1.0, math.nan, math.inf])
def test_invalid_scale(scale):
    with pytest.raises(ValueError, match="scale"):
        random_inputs(2, 3, 4, seed=0, scale=scale)
    with pytest.raises(ValueError, match="scale"):
        random_problem(2, 3, 4, seed=0, target_scale=scale)


# ------------------------------------------------------------- batched problems
def test_stacked_random_problems_stack_random_problem():
    from lib.data import stacked_random_problems

    X, Y = stacked_random_problems([3, 5], 2, 3, 4, device=DEVICE, d_out=2)
    assert X.shape == (2, 2, 3, 4) and Y.shape == (2, 2, 3, 2)
    for m, seed in enumerate([3, 5]):
        problem = random_problem(2, 3, 4, seed=seed, device=DEVICE, d_out=2)
        assert torch.equal(X[m], problem.X) and torch.equal(Y[m], problem.Y)
    with pytest.raises(ValueError, match="at least one seed"):
        stacked_random_problems([], 2, 3, 4)


@pytest.mark.parametrize("kernel", ["softmax", "gaussian"])
@pytest.mark.parametrize("trainable", [("W_Q",), ("W_Q", "W_K")])
def test_batched_teacher_problems(kernel, trainable):
    from lib.data import batched_teacher_problems

    problems = batched_teacher_problems(kernel, 2, 3, 2, trainable, 4, init_scale=0.5,
                                        device=DEVICE)
    student, teacher, X, Y = problems
    assert X.shape == (4, 2, 3, 2) and Y.shape == (4, 2, 3,
                                                   2) and problems.student is student
    for m in range(4):
        single = AttentionLayer(2, kernel=kernel, seed=m, device=DEVICE)
        for name in ("W_Q", "W_K", "W_V"):
            scale = 0.5 if name in trainable else 1.0
            assert torch.allclose(
                getattr(student, name)[m], scale * getattr(single, name))
        assert torch.equal(student.W_O[m], torch.eye(2, dtype=F64))
        assert torch.allclose(Y[m], teacher.layer(m)(X[m]))
        frozen = [name for name in ("W_K", "W_V", "W_O") if name not in trainable]
        assert all(
            torch.equal(getattr(teacher, k)[m],
                        getattr(student, k)[m]) for k in frozen)
        with torch.no_grad():
            for name in trainable:
                getattr(student, name)[m].copy_(getattr(teacher, name)[m])
        assert squared_loss(student.layer(m)(X[m]), Y[m]).item() <= 1e-28
    other = batched_teacher_problems("softmax" if kernel == "gaussian" else "gaussian",
                                     2, 3, 2, trainable, 4)
    assert torch.equal(other.X.to(DEVICE), X)  # the inputs depend on the sizes only
    with pytest.raises(ValueError, match="trainable must be distinct names"):
        batched_teacher_problems(kernel, 2, 3, 2, ("W_V",), 4)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, "float64"])
def test_random_inputs_rejects_a_non_floating_dtype(dtype):
    with pytest.raises(TypeError, match="dtype must be a floating-point torch.dtype"):
        random_inputs(2, 3, 4, dtype=dtype)
