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
    "jobs_dir",
    "carry_jobs",
    "jobs_wall_time",
    "run_jobs",
    "write_json_atomic",
    "job_curves",
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


# ------------------------------------------------------------- resumable job runs
def jobs_dir(name: str, quick: bool = False) -> Path:
    """Where a record script keeps its finished jobs: ``<repository>/.cache/records/
    <name>`` (``_quick`` appended for smoke tests); a clean of ``_build`` keeps it."""
    record_path(name)  # checks the name
    root = repository_root() or Path(__file__).resolve().parent.parent
    path = root / ".cache" / "records" / (name + ("_quick" if quick else ""))
    path.mkdir(parents=True, exist_ok=True)
    return path


def carry_jobs(name: str, settings: Mapping[str, Any], work: Path, job_name) -> dict:
    """Seed ``work`` with the finished jobs of the committed record ``name`` (if it
    was made with ``settings``), once: a fresh clone resumes where the record ended.

    job_name: job dict -> file stem. Returns (and stores in ``work/carried.json``)
    ``{"jobs": [stems carried], "wall_seconds": the record's wall time}``.
    """
    marker = Path(work) / "carried.json"
    if marker.exists():
        return json.loads(marker.read_text())
    try:
        record = load_record(name, settings=settings)
    except (FileNotFoundError, ValueError):
        carried = {"jobs": [], "wall_seconds": 0.0}
    else:
        stems = []
        for job in record["jobs"]:
            path = Path(work) / f"{job_name(job)}.json"
            if not path.exists():
                path.write_text(json.dumps(job) + "\n")
                stems.append(job_name(job))
        carried = {"jobs": stems, "wall_seconds": record["wall_seconds"]}
    marker.write_text(json.dumps(carried) + "\n")
    return carried


def jobs_wall_time(work: Path, start_file: Path, carried: Mapping[str, Any],
                   stems: list[str]) -> float:
    """Wall time of a record made in ``work``: the carried record's, plus the time
    from ``start_file`` (written when the first session began) to the last job file
    (of ``stems``) written here (an interrupted session logs no time of its own)."""
    skip = set(carried.get("jobs", []))
    ran = [Path(work) / f"{s}.json" for s in stems if s not in skip]
    ran = [p for p in ran if p.exists()]
    begin = Path(start_file).stat().st_mtime
    end = max((p.stat().st_mtime for p in ran), default=begin)
    return float(carried.get("wall_seconds", 0.0)) + max(end - begin, 0.0)


def run_jobs(jobs: list[dict], run_job, work: Path, job_name, *, workers: int = 2,
             describe=None, **kwargs) -> list[dict]:
    """Run the jobs of ``jobs`` that have no file in ``work`` yet, ``workers`` at a
    time (joblib's process pool), with a progress bar; return every job's result.

    run_job(job, out_path=..., **kwargs) must write the job's result (a dict) as JSON
    to ``out_path`` atomically and return it. describe(result) -> str prints a line
    per finished job. Appends {"jobs_run", "wall_seconds"} to ``work/sessions.json``.
    """
    import sys
    import time

    from joblib import Parallel, delayed
    from tqdm import tqdm

    work = Path(work)
    pending = [j for j in jobs if not (work / f"{job_name(j)}.json").exists()]
    print(f"{len(jobs)} jobs, {len(jobs) - len(pending)} already done, {len(pending)}"
          f" to run on {workers} worker(s)", flush=True)
    start = time.perf_counter()
    tasks = (delayed(run_job)(j, out_path=work / f"{job_name(j)}.json", **kwargs)
             for j in pending)
    results = Parallel(n_jobs=workers, return_as="generator_unordered")(tasks)
    for r in tqdm(results, total=len(pending), desc="jobs", file=sys.stdout):
        if describe is not None:
            tqdm.write(describe(r))
    log = work / "sessions.json"
    sessions = (json.loads(log.read_text()) if log.exists() else []) + [
        {"jobs_run": len(pending), "wall_seconds": time.perf_counter() - start}]
    log.write_text(json.dumps(sessions) + "\n")
    return [json.loads((work / f"{job_name(j)}.json").read_text()) for j in jobs]


def write_json_atomic(path: Path, value: Any) -> None:
    """Write ``value`` as JSON to ``path`` through a temporary file (never half a
    file)."""
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(value) + "\n")
    tmp.replace(path)


def job_curves(record: Mapping[str, Any], kernels, keys=("test_acc", "test_loss"),
               **match: Any):
    """``run_curves`` for a record of independent jobs (``scripts/record_*.py``).

    record: {"settings": {steps, eval_every, seeds}, "jobs": [{"kernel", "seed",
    "status", "eval_steps", <keys>, ...}]}; only the jobs whose fields equal
    ``match`` (e.g. ``lr=0.01`` or ``probe=None``) are read, one per kernel and seed.
    Returns (steps (T,), then for each key {kernel: (seeds, T)}), with the checks of
    ``run_curves``; ValueError when a (kernel, seed) has no job or several.
    """
    s = record["settings"]
    chosen = [j for j in record["jobs"] if all(j.get(k) == v for k, v in match.items())]
    runs = {}
    for kernel in kernels:
        runs[kernel] = []
        for seed in s["seeds"]:
            found = [j for j in chosen if j["kernel"] == kernel and j["seed"] == seed]
            if len(found) != 1:
                raise ValueError(f"{len(found)} jobs for kernel {kernel!r}, seed {seed}"
                                 f" with {match}; expected one")
            runs[kernel].append(found[0])
    steps = runs[kernels[0]][0]["eval_steps"]
    if any(j["eval_steps"] != steps for js in runs.values() for j in js):
        raise ValueError("the jobs were evaluated at different steps")
    return run_curves({"settings": s, "eval_steps": steps, "runs": runs}, kernels, keys)
