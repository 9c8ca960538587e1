"""Device selection: CUDA when available, else the CPU; ``GDT_DEVICE`` overrides."""
from __future__ import annotations

import os

import torch

from .validation import check_device

__all__ = ["get_device"]


def get_device(prefer: str | None = None) -> torch.device:
    """The device to compute on.

    Order: the ``prefer`` argument, the ``GDT_DEVICE`` environment variable (e.g.
    ``cpu``), CUDA if available, else the CPU. An unknown device name, or CUDA where
    there is none, raises
    ``ValueError`` naming the argument or the variable.
    """
    if prefer is not None and prefer != "":
        return check_device(prefer, "prefer")
    choice = os.environ.get("GDT_DEVICE", "").strip()
    if choice:
        return check_device(choice, "GDT_DEVICE (environment variable)")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
