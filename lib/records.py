"""Recorded runs: JSON files of longer experiments, written by scripts and read by the
chapters.

    path = save_record("imdb_sgd", {"runs": ...}, settings=SETTINGS,
    wall_seconds=1234.5) record = load_record("imdb_sgd", settings=SETTINGS)   #
    ValueError if the settings differ record["hardware"], record["wall_seconds"],
    record["recorded_utc"], record["settings"]

Every record holds its ``settings`` (what was run), the ``hardware`` it ran on
(``hardware_info``), the wall-clock time and the date. Records live in
``chapters/recorded/`` of the repository (``records_dir``), or in the directory named by
the environment variable ``GDT_RECORDS_DIR``.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path
from typing import Any, Mapping

import torch

from .settings import repository_root

__all__ = [
    "RECORDS_ENV",
    "records_dir",
    "record_path",
    "hardware_info",
    "cpu_name",
    "save_record",
    "load_record",
    "settings_differences",
    "run_curves",
]

RECORDS_ENV = "GDT_RECORDS_DIR"


def records_dir() -> Path:
    """The directory of the recorded runs: ``$GDT_RECORDS_DIR``, else
    ``<repository>/chapters/recorded``."""
    if os.environ.get(RECORDS_ENV):
        return Path(os.environ[RECORDS_ENV])
    root = repository_root() or Path(__file__).resolve().parent.parent
    return root / "chapters" / "recorded"


def record_path(name: str) -> Path:
    """Path of the record ``name`` (a file name without directories; ``.json`` is
    appended)."""
    if (
        not isinstance(name, str)
        or not name
        or "/" in name
        or "\\" in name
        or name.startswith(".")
    ):
        raise ValueError(
            f"name must be a plain file name such as 'imdb_sgd', got {name!r}"
        )
    return records_dir() / (name if name.endswith(".json") else name + ".json")


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what ``platform``
    reports."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware_info(device: torch.device | str | None = None) -> dict[str, Any]:
    """What a run ran on: platform, CPU, logical CPUs, torch version and threads,
    device, GPU name."""
    device = torch.device("cpu" if device is None else device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": cpu_name(),
        "logical_cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "gpu": gpu,
    }


def _plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value))


def settings_differences(
    recorded: Mapping[str, Any], expected: Mapping[str, Any]
) -> list[str]:
    """Keys whose values differ between two settings dicts (compared as JSON),
    sorted."""
    a, b = _plain(dict(recorded)), _plain(dict(expected))
    return sorted(
        k for k in set(a) | set(b) if a.get(k, "<missing>") != b.get(k, "<missing>")
    )


def save_record(
    name: str,
    data: Mapping[str, Any],
    *,
    settings: Mapping[str, Any],
    wall_seconds: float,
    device: torch.device | str | None = None,
    hardware: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``data`` plus settings, hardware, wall time and UTC date to
    ``record_path(name)``.

    ``hardware``: as returned by ``hardware_info`` (default: this process's, on
    ``device``). Returns the path. The keys settings, hardware, wall_seconds and
    recorded_utc are reserved.
    """
    reserved = {"settings", "hardware", "wall_seconds", "recorded_utc"} & set(data)
    if reserved:
        raise ValueError(f"data must not contain the reserved keys {sorted(reserved)}")
    if (
        isinstance(wall_seconds, bool)
        or not isinstance(wall_seconds, (int, float))
        or wall_seconds < 0
    ):
        raise ValueError(
            f"wall_seconds must be a non-negative number, got {wall_seconds!r}"
        )
    record = {
        "settings": _plain(dict(settings)),
        "hardware": dict(hardware) if hardware is not None else hardware_info(device),
        "wall_seconds": float(wall_seconds),
        "recorded_utc": (
            datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        ),
        **_plain(dict(data)),
    }
    path = record_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(path)
    return path


def load_record(name: str, settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read the record ``name``; with ``settings``, check that it was made with
    exactly those.

    Raises FileNotFoundError (naming the script that writes it, if known) or
    ValueError listing the settings that differ.
    """
    path = record_path(name)
    if not path.exists():
        raise FileNotFoundError(
            f"no recorded run {path}; the scripts in scripts/record_*.py write them"
        )
    record = json.loads(path.read_text())
    if settings is not None:
        diff = settings_differences(record.get("settings", {}), settings)
        if diff:
            raise ValueError(
                f"the record {path.name} was made with different settings: {diff}"
            )
    return record


def run_curves(record: Mapping[str, Any], kernels, keys=("test_acc", "test_loss")):
    """Check a record of per-seed runs and return its curves as arrays.

    record: {"settings": {steps, eval_every, seeds}, "eval_steps": [...], "runs":
    {kernel: [{"seed", "status", "test_acc", "test_loss", ...}, ...]}}. Checks:
    evaluations at step 0, every eval_every steps and at the end; one run per seed
    in order; every run completed ("max_steps") with finite curves of that length.
    Returns (steps (T,), then for each key {kernel: (seeds, T)}). Raises ValueError
    naming what does not match.
    """
    import numpy as np

    s = record["settings"]
    grid = sorted(set(range(0, s["steps"], s["eval_every"])) | {s["steps"]})
    if list(record["eval_steps"]) != grid:
        raise ValueError(
            f"eval_steps {record['eval_steps']} are not 0, every {s['eval_every']},"
            f" {s['steps']}"
        )
    out = []
    for key in keys:
        curves = {}
        for kernel in kernels:
            runs = record["runs"][kernel]
            if [r["seed"] for r in runs] != list(s["seeds"]):
                raise ValueError(
                    f"{kernel}: runs for seeds {[r['seed'] for r in runs]}, expected"
                    f" {s['seeds']}"
                )
            bad = [
                r["seed"]
                for r in runs
                if r["status"] != "max_steps"
                or len(r[key]) != len(grid)
                or not np.isfinite(r[key]).all()
            ]
            if bad:
                raise ValueError(
                    f"{kernel}: seeds {bad} did not complete with finite {key} curves"
                )
            curves[kernel] = np.array([r[key] for r in runs], dtype=float)
        out.append(curves)
    return (np.array(grid), *out)
