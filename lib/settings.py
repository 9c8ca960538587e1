"""Run-time settings read from the environment.

* ``BOOK_FULL`` ("1", "true" or "yes", any case): chapters run their full-size
experiments
  (``full_mode()``); otherwise the reduced sizes that keep the book's build fast.
* ``GDT_CACHE=off`` disables the result cache of ``lib.cache`` (``cache_enabled()``).
* ``GDT_CACHE_DIR``: where the cache lives (``cache_dir()``); default
``<repository>/.cache/results``
  when ``lib`` is used from a checkout of the book (a ``pyproject.toml`` next to
  ``lib/``), else
  ``~/.cache/gdt-book``.

The variables are read at every call, so a notebook can change them with ``os.environ``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

__all__ = [
    "full_mode",
    "cache_enabled",
    "cache_dir",
    "repository_root",
    "BOOK_VARIABLES",
    "environment_report",
]

_TRUE = {"1", "true", "yes"}


def full_mode() -> bool:
    """True when ``BOOK_FULL`` is "1", "true" or "yes" (case-insensitive,
    surrounding spaces ignored)."""
    return os.environ.get("BOOK_FULL", "").strip().lower() in _TRUE


def cache_enabled() -> bool:
    """False exactly when ``GDT_CACHE`` is "off" (case-insensitive)."""
    return os.environ.get("GDT_CACHE", "").strip().lower() != "off"


def repository_root() -> Path | None:
    """The book's checkout that contains this ``lib`` (the directory with
    ``pyproject.toml`` next to
    ``lib/``), or None when ``lib`` is installed elsewhere."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def cache_dir() -> Path:
    """The directory of cached results: ``GDT_CACHE_DIR``, else
    ``<repository>/.cache/results`` in a checkout, else ``~/.cache/gdt-book``. Not
    created here (``lib.cache`` creates it on first write)."""
    configured = os.environ.get("GDT_CACHE_DIR", "").strip()
    if configured:
        return Path(configured).expanduser()
    root = repository_root()
    if root is not None:
        return root / ".cache" / "results"
    return Path.home() / ".cache" / "gdt-book"


# --- what the environment sets (printed by the preface) -----------------------------

#: The environment variables the book reads (the preface's table explains them).
BOOK_VARIABLES = ("BOOK_FULL", "GDT_DATA_DIR", "GDT_DEVICE", "GDT_CACHE")


def environment_report(names: Sequence[str] = BOOK_VARIABLES) -> str:
    """One line "  NAME = value" per variable in ``names``, "(not set)" when unset."""
    if isinstance(names, str):
        raise ValueError(f"names must be a sequence of variable names, got {names!r}")
    return "\n".join(f"  {name} = {os.environ.get(name, '(not set)')}"
                     for name in names)
