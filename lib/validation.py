"""Argument checks shared by the library: every bad input gets a clear error naming the
argument.

The vocabulary: ``check_int`` / ``check_positive_int`` (integers, optionally in a
range),
``check_number`` / ``check_positive_float`` (real numbers), ``check_seed``,
``check_float_dtype``,
``check_tensor`` (floating tensors of a shape, optionally non-empty), ``check_device``,
``check_choice`` and ``check_names`` (parameter names of a module: known, distinct).
A wrong type raises ``TypeError``, a wrong value ``ValueError``.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import torch

__all__ = [
    "ArgumentTypeError",
    "check_tensor",
    "check_param_dict",
    "check_int",
    "check_number",
    "check_float_dtype",
    "check_device",
    "check_positive_int",
    "check_positive_float",
    "check_finite",
    "check_choice",
    "check_seed",
    "check_names",
    "check_matches",
    "check_shapes",
]

#: Seeds are what torch.Generator.manual_seed and numpy accept alike: 0 <= seed < 2**32.
SEED_LIMIT = 2**32


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type. Also a ``ValueError``, so code that catches
    either (or tests written for either) sees it."""


def _integer_phrase(minimum: int | None, maximum: int | None) -> str:
    if maximum is None:
        if minimum == 1:
            return "a positive integer"
        if minimum == 0:
            return "a non-negative integer"
        return "an integer" if minimum is None else f"an integer >= {minimum}"
    if minimum is None:
        return f"an integer <= {maximum}"
    return f"an integer in [{minimum}, {maximum}]"


def check_int(value: object, name: str, minimum: int | None = None,
              maximum: int | None = None) -> int:
    """Return ``value`` as an int (Python or NumPy integer, not bool) in [minimum,
    maximum]."""
    what = _integer_phrase(minimum, maximum)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ArgumentTypeError(
            f"{name} must be {what}, got {value!r} ({type(value).__name__})")
    if (minimum is not None and value < minimum) or (maximum is not None
                                                     and value > maximum):
        raise ValueError(f"{name} must be {what}, got {value}")
    return int(value)


def check_positive_int(value: object, name: str) -> int:
    """Return ``value`` as an int, or raise if it is not a positive integer."""
    return check_int(value, name, minimum=1)


def check_number(
    value: object,
    name: str,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a float: a finite real number (not bool) in the interval
    from ``low`` to ``high`` (closed ends unless ``low_open`` / ``high_open``)."""
    if isinstance(value, bool) or not isinstance(value,
                                                 (int, float, np.integer, np.floating)):
        raise ArgumentTypeError(
            f"{name} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if below or above:
        interval = (
            f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        )
        raise ValueError(f"{name} must lie in {interval}, got {value}")
    return value


def check_positive_float(value: object, name: str) -> float:
    """Return ``value`` as a float, or raise if it is not a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value,
                                                 (int, float, np.integer, np.floating)):
        raise TypeError(
            f"{name} must be a positive number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def check_finite(x: torch.Tensor, name: str) -> torch.Tensor:
    """Raise if ``x`` contains NaN or infinity."""
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(
            f"{name} must contain only finite values, found {bad} NaN/inf entries")
    return x


def check_tensor(
    x: object,
    name: str,
    ndim: int | Sequence[int] | None = None,
    shape: Sequence[int | None] | None = None,
    finite: bool = True,
    nonempty: bool = False,
) -> torch.Tensor:
    """Check that ``x`` is a floating tensor of the given rank and shape (``None`` =
    any size); with ``nonempty``, that no axis has size 0 (no samples, no tokens).

    Example: ``check_tensor(X, "X", shape=(None, None, D), nonempty=True)`` for X:
    (N, n, D).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if shape is not None:
        ndim = len(shape)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.dim() not in allowed:
            want = " or ".join(str(a) for a in allowed)
            raise ValueError(
                f"{name} must have {want} dimensions, got shape {tuple(x.shape)}")
    if shape is not None:
        for axis, (got, want) in enumerate(zip(x.shape, shape)):
            if want is not None and got != want:
                expected = "(" + ", ".join("*" if s is None else str(s)
                                           for s in shape) + ")"
                raise ValueError(
                    f"{name} must have shape {expected}, got {tuple(x.shape)} (axis"
                    f" {axis}: {got} != {want})"
                )
    if nonempty and x.numel() == 0:
        raise ValueError(
            f"{name} must not be empty, got shape {tuple(x.shape)} (an axis of size 0)")
    if finite:
        check_finite(x, name)
    return x


def check_float_dtype(dtype: object, name: str = "dtype") -> torch.dtype:
    """Return ``dtype`` if it is a floating-point ``torch.dtype`` (e.g.
    torch.float64)."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(
            f"{name} must be a floating-point torch.dtype such as torch.float64 or"
            f" torch.float32, got {dtype!r}"
        )
    return dtype


def check_device(device: object, name: str = "device") -> torch.device:
    """``device`` as a ``torch.device``: a known device type, and CUDA only when it
    is available.

    ``name`` names the argument (or environment variable) in the error message.
    """
    if not isinstance(device, (str, torch.device)):
        raise TypeError(
            f"{name} must be a device name such as 'cpu' or 'cuda', got {device!r}")
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise ValueError(
            f"{name} {str(device)!r} is not a device torch knows; use e.g. 'cpu',"
            " 'cuda' or 'cuda:0'"
        ) from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"{name} {str(device)!r} was requested but CUDA is not available on this"
            " machine"
        )
    return parsed


def check_choice(value: str, name: str, choices: Sequence[str]) -> str:
    """Raise ``ValueError`` listing the valid choices if ``value`` is not one of
    them."""
    if value not in choices:
        raise ValueError(
            f"unknown {name} {value!r}; valid: {', '.join(repr(c) for c in choices)}")
    return value


def check_seed(value: object, name: str = "seed") -> int:
    """Return ``value`` as an int, or raise ``ValueError`` if it is not an integer
    in [0, 2**32) (the seeds that torch, NumPy and Python's ``random`` all accept)."""
    if isinstance(
            value,
            bool) or not isinstance(value,
                                    (int, np.integer)) or not 0 <= value < SEED_LIMIT:
        raise ValueError(
            f"{name} must be a non-negative integer below 2**32, got {value!r}"
            f" ({type(value).__name__})"
        )
    return int(value)


def check_names(
    module: object, names: Sequence[str] | str, what: str = "names", noun: str = "name"
) -> tuple[str, ...]:
    """The parameter names as a tuple: at least one, each a parameter of ``module``,
    none repeated.

    A single string counts as one name. Unknown names raise ``ValueError`` listing
    the valid ones ("unknown {noun} 'W_X' in {what}"); a repeated name raises
    ``ValueError`` (a repeated name would take its step twice).
    """
    from torch import nn

    if not isinstance(module, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(module).__name__}")
    names = (names,) if isinstance(names, str) else tuple(names)
    if not names:
        raise ValueError(f"{what} must name at least one parameter")
    valid = dict(module.named_parameters())
    for name in names:
        if name not in valid:
            raise ValueError(
                f"unknown {noun} {name!r} in {what}; valid: {', '.join(valid)}")
    if len(set(names)) != len(names):
        raise ValueError(
            f"{what} must not repeat a name (the names must be distinct), got {names}")
    return names


def check_param_dict(params: object, valid: Mapping[str, object],
                     what: str = "params") -> None:
    """Raise unless ``params`` is a mapping {name: value} whose every name is a key
    of ``valid`` (the parameters of a model); the error names ``what`` and lists the
    valid names."""
    if not isinstance(params, Mapping):
        raise TypeError(
            f"{what} must be a dict {{name: tensor}}, got {type(params).__name__}")
    for name in params:
        if name not in valid:
            raise ValueError(
                f"unknown parameter name {name!r} in {what}; valid: {', '.join(valid)}")


def check_matches(x: torch.Tensor, name: str, like: torch.Tensor,
                  owner: str) -> torch.Tensor:
    """``x`` must have the dtype and device of ``like`` (e.g. a layer's weights, named
    ``owner`` in the message)."""
    if x.dtype != like.dtype:
        raise TypeError(
            f"{name} has dtype {x.dtype} but {owner} are {like.dtype}; convert {name}"
            " with .to()"
        )
    if x.device != like.device:
        raise ValueError(f"{name} is on {x.device} but {owner} are on {like.device}")
    return x


# --- a table of expected and actual shapes -------------------------------------------


def check_shapes(shapes: Mapping[str, tuple[Sequence[int], Sequence[int]]]) -> str:
    """Check {name: (expected shape, actual shape)}; return one aligned line per name,
    "name  expected (H, D, d)  got (H, D, d)". Raises ValueError naming every
    mismatch."""
    wrong = [f"{name}: expected {tuple(want)}, got {tuple(got)}"
             for name, (want, got) in shapes.items() if tuple(got) != tuple(want)]
    if wrong:
        raise ValueError("wrong shapes: " + "; ".join(wrong))
    return "\n".join(f"{name:26s} expected {str(tuple(want)):14s} got "
                     f"{str(tuple(got)):14s}".rstrip()
                     for name, (want, got) in shapes.items())
