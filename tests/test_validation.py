"""Tests of lib.validation (argument checks) and of the package-level helpers of
lib/__init__.py (set_seed) and lib/device.py (get_device)."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

import lib
from lib.device import get_device
from lib.validation import (
    check_choice,
    check_finite,
    check_positive_float,
    check_positive_int,
    check_tensor,
)


# ------------------------------------------------------------------ check_positive_int
@pytest.mark.parametrize("value", [1, 7, 10**12])
def test_positive_int_accepts(value):
    assert check_positive_int(value, "H") == value


@pytest.mark.parametrize("value", [0, -1, -5])
def test_positive_int_rejects_non_positive(value):
    with pytest.raises(ValueError, match=f"H must be a positive integer, got {value}"):
        check_positive_int(value, "H")


@pytest.mark.parametrize("value", [2.5, 2.0, "3", None, True, np.float64(2.0)])
def test_positive_int_rejects_non_int(value):
    with pytest.raises(TypeError, match="D must be a positive integer"):
        check_positive_int(value, "D")


# ------------------------------------------------------------------
# check_positive_float
@pytest.mark.parametrize("value", [1, 0.5, 1e-300, 3e10])
def test_positive_float_accepts(value):
    out = check_positive_float(value, "lr")
    assert isinstance(out, float) and out == value


@pytest.mark.parametrize("value", [0, 0.0, -0.1, math.nan, math.inf, -math.inf])
def test_positive_float_rejects(value):
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        check_positive_float(value, "lr")


@pytest.mark.parametrize("value", ["0.1", None, True, [1.0]])
def test_positive_float_rejects_non_numbers(value):
    with pytest.raises(TypeError, match="lr must be a positive number"):
        check_positive_float(value, "lr")


# ------------------------------------------------------------------ check_finite /
# check_tensor
def test_check_finite_counts_bad_entries():
    x = torch.tensor([1.0, math.nan, math.inf, 2.0])
    with pytest.raises(
            ValueError,
            match="X must contain only finite values, found 2 NaN/inf entries"):
        check_finite(x, "X")
    assert check_finite(torch.ones(3), "X") is not None


def test_check_tensor_accepts_and_returns():
    x = torch.zeros(2, 3, 4, dtype=torch.float64)
    assert check_tensor(x, "X", shape=(None, None, 4)) is x
    assert check_tensor(x, "X", ndim=(2, 3)) is x
    assert check_tensor(x, "X") is x


def test_check_tensor_type_and_dtype():
    with pytest.raises(TypeError, match="X must be a torch.Tensor, got list"):
        check_tensor([1.0], "X")
    with pytest.raises(
            TypeError,
            match="X must be a floating-point tensor, got dtype torch.int64"):
        check_tensor(torch.ones(2, dtype=torch.int64), "X")


def test_check_tensor_rank_and_shape():
    x = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError,
                       match=r"X must have 2 dimensions, got shape \(2, 3, 4\)"):
        check_tensor(x, "X", ndim=2)
    with pytest.raises(ValueError, match="X must have 1 or 2 dimensions"):
        check_tensor(x, "X", ndim=(1, 2))
    with pytest.raises(
            ValueError,
            match=r"X must have shape \(\*, 5, \*\), got \(2, 3, 4\) \(axis 1: 3 != 5\)"
    ):
        check_tensor(x, "X", shape=(None, 5, None))
    with pytest.raises(ValueError, match="X must have 2 dimensions"):
        check_tensor(x, "X", shape=(2, 3))


def test_check_tensor_finite_flag():
    x = torch.tensor([[1.0, math.nan]])
    with pytest.raises(ValueError, match="Y must contain only finite values"):
        check_tensor(x, "Y")
    assert check_tensor(x, "Y", finite=False) is x


def test_check_choice():
    assert check_choice("b", "mode", ["a", "b"]) == "b"
    with pytest.raises(ValueError, match=r"unknown mode 'c'; valid: 'a', 'b'"):
        check_choice("c", "mode", ["a", "b"])


# ------------------------------------------------------------------ lib.set_seed
def _draws():
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_set_seed_makes_all_generators_reproducible():
    lib.set_seed(1234)
    first = _draws()
    lib.set_seed(1234)
    assert _draws() == first
    lib.set_seed(1235)
    other = _draws()
    assert all(a != b for a, b in zip(first, other))


@pytest.mark.parametrize("seed", [-1, 1.5, "0", None, True])
def test_set_seed_rejects_invalid_seeds(seed):
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        lib.set_seed(seed)


def test_package_exports():
    assert callable(lib.set_seed) and lib.get_device is get_device
    assert isinstance(lib.__version__, str)


# ------------------------------------------------------------------ lib.get_device
def test_get_device_default(monkeypatch):
    monkeypatch.delenv("GDT_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert get_device().type == expected


def test_get_device_environment_override(monkeypatch):
    monkeypatch.setenv("GDT_DEVICE", "cpu")
    assert get_device() == torch.device("cpu")


def test_get_device_prefer_argument(monkeypatch):
    monkeypatch.delenv("GDT_DEVICE", raising=False)
    assert get_device("cpu") == torch.device("cpu")


def test_get_device_rejects_unknown_names(monkeypatch):
    monkeypatch.setenv("GDT_DEVICE", "not-a-device")
    with pytest.raises((RuntimeError, ValueError), match="not-a-device"):
        get_device()


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_get_device_cuda_unavailable(monkeypatch):
    monkeypatch.setenv("GDT_DEVICE", "cuda")
    with pytest.raises(ValueError,
                       match="'cuda' was requested but CUDA is not available"):
        get_device()
    monkeypatch.delenv("GDT_DEVICE")
    with pytest.raises(ValueError, match="CUDA is not available"):
        get_device("cuda:0")


# ------------------------------------------------------------- the shared vocabulary
def test_gdt_device_gpu_names_the_variable(monkeypatch):
    monkeypatch.setenv("GDT_DEVICE", "gpu")
    with pytest.raises(ValueError,
                       match="GDT_DEVICE .* 'gpu' is not a device torch knows"):
        get_device()


def test_set_seed_validates_before_touching_any_generator():
    import random

    import numpy as np

    state_py, state_np = random.getstate(), np.random.get_state()[1].copy()
    state_torch = torch.get_rng_state().clone()
    with pytest.raises(ValueError,
                       match="seed must be a non-negative integer below 2\\*\\*32"):
        lib.set_seed(2**40)
    assert random.getstate() == state_py and (np.random.get_state()[1]
                                              == state_np).all()
    assert torch.equal(torch.get_rng_state(), state_torch)


def test_check_int_and_check_number():
    import numpy as np

    from lib.validation import ArgumentTypeError, check_int, check_number

    assert check_int(np.int64(3), "k", 1) == 3 and isinstance(
        check_int(np.int64(3), "k"), int)
    for bad, error in ((2.5, ArgumentTypeError), (True, ArgumentTypeError),
                       (0, ValueError)):
        with pytest.raises(error, match="k must be a positive integer"):
            check_int(bad, "k", 1)
    with pytest.raises(ValueError, match="k must be an integer in \\[2, 5\\], got 6"):
        check_int(6, "k", 2, 5)
    with pytest.raises(
            TypeError):  # an ArgumentTypeError is a TypeError and a ValueError
        check_int("3", "k")
    assert check_number(np.float32(0.5), "p", 0, 1) == 0.5
    with pytest.raises(ValueError, match="p must lie in \\[0, 1\\), got 1.0"):
        check_number(1, "p", 0, 1, high_open=True)
    with pytest.raises(ValueError, match="p must be a finite number, got nan"):
        check_number(float("nan"), "p")
    with pytest.raises(TypeError, match="p must be a number, got '1'"):
        check_number("1", "p")


def test_check_float_dtype_device_and_names():
    from torch import nn

    from lib.validation import check_device, check_float_dtype, check_names

    assert check_float_dtype(torch.float32) is torch.float32
    with pytest.raises(TypeError, match="dtype must be a floating-point"):
        check_float_dtype(torch.int64)
    assert check_device("cpu") == torch.device("cpu")
    with pytest.raises(TypeError, match="device must be a device name"):
        check_device(3)
    module = nn.Linear(2, 2)
    assert check_names(module, "weight") == ("weight",)
    with pytest.raises(ValueError,
                       match="unknown name 'w' in names; valid: weight, bias"):
        check_names(module, ["w"])
    with pytest.raises(ValueError, match="names must not repeat a name"):
        check_names(module, ["bias", "bias"])
    with pytest.raises(ValueError, match="at least one"):
        check_names(module, [])


def test_check_matches_names_dtype_and_device():
    from lib.validation import check_matches

    w = torch.zeros(2, dtype=torch.float64)
    assert check_matches(torch.ones(3, dtype=torch.float64), "X", w,
                         "the weights").shape == (3, )
    with pytest.raises(TypeError, match="X has dtype torch.float32 but the weights"):
        check_matches(torch.ones(3), "X", w, "the weights")


def test_check_shapes_reports_and_names_mismatches():
    from lib.validation import check_shapes

    report = check_shapes({"W": ((2, 3), torch.Size([2, 3])), "loss": ((), ())})
    lines = report.splitlines()
    assert lines[0].startswith("W ") and lines[0].endswith("got (2, 3)")
    assert lines[1].endswith("expected ()             got ()")
    with pytest.raises(ValueError, match=r"W: expected \(2, 3\), got \(3, 2\); b:"):
        check_shapes({"W": ((2, 3), (3, 2)), "ok": ((1,), (1,)), "b": ((4,), (4, 1))})


def test_check_param_dict_names_the_argument():
    from lib.validation import check_param_dict

    valid = {"W_Q": 1, "W_K": 2}
    check_param_dict({"W_Q": 0}, valid, "dir1")  # a subset is fine
    with pytest.raises(ValueError, match=r"unknown parameter name 'W_X' in dir1; "
                       r"valid: W_Q, W_K"):
        check_param_dict({"W_X": 0}, valid, "dir1")
    with pytest.raises(TypeError, match="params must be a dict"):
        check_param_dict([("W_Q", 0)], valid)
