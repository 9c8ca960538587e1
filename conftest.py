"""Pytest plugin code for the book (loaded for every pytest run from the repository).

* Limits threads: ``OMP_NUM_THREADS=1`` (etc.) is set before any kernel starts, so the
  nbval kernels inherit it; pytest processes that run tests call
  ``torch.set_num_threads(1)``.
* Restricts nbval to the notebooks listed in ``_toc.yml`` (other ``.ipynb`` files under
the
  repository, e.g. in ``_build/`` or ``.ipynb_checkpoints/``, are never collected).
* Captures the outputs nbval produced and writes the executed notebook to
  ``_build/executed/<path>.ipynb`` once its last cell has run, plus wall-clock seconds
  per notebook to ``_build/executed/timings-<worker>.json`` (``worker`` is ``gw0``,
  ``gw1``, ... under pytest-xdist, ``main`` otherwise). ``scripts/build_book.py``
  builds the HTML book from these executed copies without executing anything again.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent

# Kernels are subprocesses of this process: they inherit os.environ (set before any
# starts).
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"
# A non-inline MPLBACKEND (e.g. MPLBACKEND=Agg set by a CI) would keep the kernels from
# producing figure outputs; ipykernel picks the inline backend when it is unset.
if "inline" not in os.environ.get("MPLBACKEND", "inline"):
    del os.environ["MPLBACKEND"]
os.environ.setdefault("JUPYTER_PLATFORM_DIRS",
                      "1")  # silences a jupyter_core DeprecationWarning

sys.path.insert(0, str(ROOT / "tests"))
import book  # noqa: E402  (tests/book.py)

_IGNORED_DIRS = {"_build", ".ipynb_checkpoints", ".venv", "__pycache__", ".git"}
_TOC_NOTEBOOKS: set[Path] | None = None


def _toc_notebooks() -> set[Path]:
    global _TOC_NOTEBOOKS
    if _TOC_NOTEBOOKS is None:
        try:
            _TOC_NOTEBOOKS = {p.resolve() for p in book.toc_notebooks(ROOT)}
        except FileNotFoundError:
            _TOC_NOTEBOOKS = set()
    return _TOC_NOTEBOOKS


def _worker_id(config) -> str:
    return getattr(config, "workerinput", {}).get("workerid", "main")


def pytest_configure(config):
    is_xdist_controller = (getattr(config.option, "dist", "no") != "no"
                           and not hasattr(config, "workerinput"))
    if is_xdist_controller or config.option.collectonly:
        return  # this process runs no tests: skip the slow torch import
    import importlib.util
    if importlib.util.find_spec("torch") is not None:
        import torch
        torch.set_num_threads(1)


def pytest_ignore_collect(collection_path: Path, config):
    """Inside the repository, collect only the notebooks listed in ``_toc.yml``."""
    try:
        rel = collection_path.resolve().relative_to(ROOT)
    except ValueError:
        return None  # outside the book: not our business
    if any(part in _IGNORED_DIRS for part in rel.parts):
        return True
    if collection_path.suffix == ".ipynb" and collection_path.resolve(
    ) not in _toc_notebooks():
        return True
    return None


# ----------------------------------------------------------------- output capture
@dataclass
class _NotebookRun:
    path: Path
    nb: object  # the notebook as nbval read it (nbformat v4)
    start: float
    stop: float = 0.0
    outputs: dict = field(
        default_factory=dict)  # nbval cell number -> list of outputs | None
    failed: int = 0
    cells: int = 0


_RUNS: dict[str, _NotebookRun] = {}
_LAST_KEY = pytest.StashKey[bool]()


def _is_nbval_cell(item) -> bool:
    return type(item).__name__ == "IPyNbCell" and hasattr(item, "cell_num")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    if _is_nbval_cell(item):
        item.stash[_LAST_KEY] = nextitem is None or nextitem.parent is not item.parent


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if not _is_nbval_cell(item):
        return report
    key = item.parent.nodeid
    run = _RUNS.get(key)
    if run is None:
        run = _RUNS[key] = _NotebookRun(path=Path(str(item.parent.path)),
                                        nb=item.parent.nb, start=call.start)
    run.stop = call.stop
    if report.failed:
        run.failed += 1
    if call.when == "call":
        run.cells += 1
        run.outputs[item.cell_num] = item.test_outputs
    if call.when == "teardown" and item.stash.get(_LAST_KEY, False):
        _finish(item.config, key, status="failed" if run.failed else "passed")
    return report


def _finish(config, key: str, status: str) -> None:
    run = _RUNS.pop(key)
    try:
        rel = run.path.resolve().relative_to(ROOT)
    except ValueError:
        return  # a notebook outside the book (e.g. run by hand): nothing to record
    seconds = round(run.stop - run.start, 3)
    worker = _worker_id(config)
    meta = {
        "status": status,
        "seconds": seconds,
        "worker": worker,
        "python": platform.python_version(),
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    }
    nb = book.executed_notebook(run.nb, run.outputs, metadata=meta)
    book.write_notebook(nb, ROOT / book.EXECUTED_DIR / rel)

    timings_path = ROOT / book.EXECUTED_DIR / f"timings-{worker}.json"
    try:
        timings = json.loads(timings_path.read_text())
    except (OSError, ValueError):
        timings = {}
    timings[rel.as_posix()] = {
        **meta, "cells_run": run.cells,
        "failed_phases": run.failed
    }
    tmp = timings_path.with_name(f".{timings_path.name}.tmp")
    tmp.write_text(json.dumps(timings, indent=1, sort_keys=True) + "\n")
    tmp.replace(timings_path)


def pytest_sessionfinish(session, exitstatus):
    # Notebooks whose last cell never ran (interrupted, -x, --maxfail): keep what ran,
    # marked incomplete, so scripts/build_book.py refuses to publish them.
    for key in list(_RUNS):
        _finish(session.config, key, status="incomplete")
