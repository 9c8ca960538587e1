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
from .validation import check_seed

__version__ = "0.1.0"
__all__ = ["set_seed", "get_device", "__version__"]


def set_seed(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (CPU and CUDA).

    The seed is checked before any generator is touched: an integer in [0, 2**32).
    """
    seed = check_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
