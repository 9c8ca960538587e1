"""Device selection: CUDA when available, else the CPU; ``GDT_DEVICE`` overrides."""
from __future__ import annotations

import os

import torch

__all__ = ["get_device"]


def get_device(prefer: str | None = None) -> torch.device:
    """The device to compute on.

    Order: the ``prefer`` argument, the ``GDT_DEVICE`` environment variable (e.g. ``cpu``), CUDA if
    available, else the CPU.
    """
    choice = prefer or os.environ.get("GDT_DEVICE")
    if choice:
        device = torch.device(choice)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {choice!r} was requested but CUDA is not available")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
