"""Gradient descent dynamics of Transformers: the book's library.

Modules: ``attention`` (kernels), ``model`` (the attention layer and loss), ``trainer``
(full-batch gradient descent), ``theory`` (B matrix, lambda_B, rates, closed-form optimum),
``data`` (synthetic problems), ``plotting`` (the book's figure style), ``batched`` (many models
trained in one computation), ``hessian`` (Hessians and their extreme eigenvalues),
``landscape`` (loss-landscape slices), ``settings`` and ``cache`` (full mode, result cache),
``classifier`` and ``minibatch`` (the real-task model and its SGD/Adam trainer), ``imdb`` and
``pathfinder`` (the real-task data), ``stats`` (interval estimates).
"""
from __future__ import annotations

import random

import numpy as np
import torch

from .device import get_device

__version__ = "0.1.0"
__all__ = ["set_seed", "get_device", "__version__"]


def set_seed(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (CPU and CUDA)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
