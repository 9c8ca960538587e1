"""Gradient descent dynamics of Transformers: the book's library.

Modules: ``attention`` (kernels), ``model`` (layer settings, the attention layer and
loss),
``training`` (what the trainers share: statuses, stopping rules, callbacks, failure
reports),
``trainer`` (full-batch gradient descent), ``batched_model`` and ``batched`` (many
models in one computation, and their trainer), ``gradients`` (autograd and hand-derived
gradients), ``theory`` (B matrix, lambda_B, rates, closed-form optimum and dynamics),
``data`` (synthetic problems),
``plotting`` (the book's figure style), ``hessian`` (Hessians and their extreme
eigenvalues),
``landscape`` (loss-landscape slices), ``validation`` (argument checks), ``settings``
and
``cache`` (full mode, result cache), ``classifier`` and ``minibatch`` (the real-task
model and its SGD/Adam trainer), ``imdb`` and ``pathfinder`` (the real-task data),
``stats`` (interval estimates and summaries).
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
