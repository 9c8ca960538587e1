"""A small on-disk cache for expensive results (long trainings, landscape grids).

    from lib.cache import cached
    curves = cached("kernel-seeds", lambda: run_sweep(M=64), params={"M": 64,
    "steps": 2000})

The key is the SHA-256 of the JSON of (name, params with sorted keys,
``lib.__version__``), so a change of any parameter or of the library version computes
afresh. Values are stored with
``torch.save`` in ``lib.settings.cache_dir()``, written atomically (a temporary file,
then
``os.replace``), so an interrupted run never leaves a half-written entry. A file that
cannot be read or does not hold the expected key is ignored with a warning and
recomputed. ``GDT_CACHE=off`` disables the cache entirely (no reads, no writes).

Only load caches you wrote yourself: reading uses pickle
(``torch.load(weights_only=False)``) so that any picklable value (dicts, lists, numpy
arrays, dataclasses, tensors) can be cached.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Mapping, TypeVar

import numpy as np
import torch

from . import __version__
from .settings import cache_dir, cache_enabled

__all__ = ["cached", "cache_key", "cache_path", "clear_cache"]

T = TypeVar("T")


def _json_default(value: object) -> object:
    if isinstance(value, (torch.dtype, torch.device, Path)):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, torch.Tensor) and value.numel() <= 1000:
        return value.detach().cpu().tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    raise TypeError(
        "cache params must be JSON-serialisable (numbers, strings, lists, dicts, ...);"
        f" got {type(value).__name__}"
    )


def _check(name: str, params: Mapping) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if not isinstance(params, Mapping):
        raise TypeError(
            f"params must be a mapping (e.g. a dict), got {type(params).__name__}")


def cache_key(name: str, params: Mapping) -> str:
    """The hex SHA-256 of json([name, params (keys sorted), lib.__version__])."""
    _check(name, params)
    text = json.dumps([name, dict(params), __version__], sort_keys=True,
                      default=_json_default)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_KEY_CHARS = 24


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name.strip())[:80]


def cache_path(name: str, params: Mapping) -> Path:
    """The file holding the cached value of (name, params):
    ``cache_dir()/<name>-<key prefix>.pt``."""
    return cache_dir() / f"{_safe(name)}-{cache_key(name, params)[:_KEY_CHARS]}.pt"


def _read(path: Path, key: str) -> tuple[bool, object]:
    try:
        payload = torch.load(path, map_location=None, weights_only=False)
    except Exception as error:  # noqa: BLE001  (any unreadable file is ignored)
        warnings.warn(
            f"ignoring unreadable cache file {path} ({type(error).__name__}: {error});"
            " recomputing",
            RuntimeWarning,
            stacklevel=3,
        )
        return False, None
    if not isinstance(payload,
                      dict) or payload.get("key") != key or "value" not in payload:
        warnings.warn(
            f"ignoring cache file {path}: it does not hold the expected entry;"
            " recomputing",
            RuntimeWarning,
            stacklevel=3,
        )
        return False, None
    return True, payload["value"]


def _write(path: Path, payload: dict) -> None:
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                        suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
        os.replace(tmp_name, path)
        tmp_name = None
    # noqa: BLE001  (a failed write must not lose the computed value)
    except Exception as error:
        warnings.warn(
            f"could not write the cache file {path} ({type(error).__name__}: {error})",
            RuntimeWarning, stacklevel=3)
    finally:
        if tmp_name is not None and os.path.exists(tmp_name):
            os.remove(tmp_name)


def cached(name: str, compute: Callable[[], T], *, params: Mapping,
           recompute: bool = False) -> T:
    """``compute()``'s value for (name, params), from the cache when present and valid.

    recompute=True ignores a cached value and overwrites it. With caching disabled
    (``GDT_CACHE=off``) this is exactly ``compute()``: no file is read or written.
    """
    _check(name, params)
    if not callable(compute):
        raise TypeError(
            "compute must be a function of no arguments returning the value")
    if not cache_enabled():
        return compute()
    key = cache_key(name, params)
    path = cache_path(name, params)
    if not recompute and path.exists():
        found, value = _read(path, key)
        if found:
            return value  # type: ignore[return-value]
    value = compute()
    payload = {
        "key": key,
        "name": name,
        "version": __version__,
        "params": json.dumps(dict(params), sort_keys=True, default=_json_default),
        "value": value
    }
    _write(path, payload)
    return value


def clear_cache(name: str | None = None) -> int:
    """Delete cached files (all of them, or those of ``name``); returns how many
    were removed."""
    directory = cache_dir()
    if not directory.is_dir():
        return 0
    pattern = "*.pt" if name is None else f"{_safe(name)}-{'?' * _KEY_CHARS}.pt"
    removed = 0
    for path in directory.glob(pattern):
        path.unlink()
        removed += 1
    return removed
