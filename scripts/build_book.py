#!/usr/bin/env python3
"""Build the HTML book from the notebooks pytest/nbval just executed (no second
execution).

Run after ``pytest`` (``make test`` runs both):

1. checks that every notebook of ``_toc.yml`` has an executed copy in
``_build/executed/``
   (written by ``conftest.py``) that passed and matches the current notebook cell by
   cell;
2. stages the book sources into ``_build/staged/`` (``_config.yml``, ``_toc.yml``, the
   bibliography, every file of ``_toc.yml`` with notebooks carrying the executed
   outputs, the non-notebook files under ``chapters/``, the logo/favicon and
   ``_static/``, ``_ext/``,
   ``images/``, ``figures/``, ``assets/`` when present), with ``execute_notebooks:
   "off"``, and MathJax (``scripts/fetch_mathjax.py``) into ``_build/staged/_mathjax``;
3. runs ``jupyter-book build _build/staged --path-output . --all -W -n --keep-going``,
which
   writes ``_build/html``; exits non-zero if the build fails or prints any warning;
4. prints a table of the wall-clock seconds of each notebook (from
   ``_build/executed/timings-*.json``) and writes it to ``_build/notebook-timings.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import book  # noqa: E402  (tests/book.py)

sys.path.insert(0, str(ROOT / "scripts"))
import fetch_mathjax  # noqa: E402

ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")
WARNING_RE = re.compile(r"\b(WARNING|ERROR|CRITICAL|SEVERE)\b[:\]]")
ASSET_DIRS = ("_static", "_ext", "images", "figures", "assets")
SKIP_PARTS = {".ipynb_checkpoints", "__pycache__"}


class BuildError(Exception):
    pass


def _staged_notebook(root: Path, source: Path) -> nbformat.NotebookNode:
    """The current notebook with the outputs of its executed copy; BuildError if
    unusable."""
    rel = source.relative_to(root).as_posix()
    executed = book.executed_path(root, source)
    if not executed.is_file():
        raise BuildError(f"missing: {rel} (no {executed.relative_to(root)})")
    current = nbformat.read(source, as_version=4)
    done = nbformat.read(executed, as_version=4)
    status = done.metadata.get("gdt_execution", {}).get("status")
    if status != "passed":
        raise BuildError(f"not passed: {rel} (its last nbval run is {status!r})")
    if book.cell_sources(current) != book.cell_sources(done):
        raise BuildError(f"stale: {rel} changed after it was executed")
    no_alt = []
    for cell, ran in zip(current.cells, done.cells):
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = ran.outputs, ran.execution_count
            shown = "remove-output" not in cell.metadata.get("tags", [])
            images = any(
                k.startswith("image/") for o in cell.outputs for k in o.get("data", {}))
            if shown and images and not cell.metadata.get("mystnb", {}).get(
                    "image", {}).get("alt"):
                no_alt.append(cell.get("id", "?"))
    if no_alt:
        raise BuildError(
            f"no alt text: {rel}, cells {', '.join(no_alt)} show a figure without "
            "cell metadata mystnb.image.alt (one sentence describing it)")
    if "language_info" in done.metadata:
        current.metadata["language_info"] = done.metadata["language_info"]
    current.metadata.pop("widgets", None)
    nbformat.validate(current)
    return current


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)


def stage(root: Path, staged: Path) -> list[Path]:
    """Stage the book into ``staged``; return the toc notebooks. Raise BuildError if
    unusable."""
    missing = book.missing_toc_entries(root)
    if missing:
        raise BuildError(
            "_toc.yml lists files that do not exist: " + ", ".join(missing))
    notebooks, problems = [], []
    if staged.exists():
        shutil.rmtree(staged)
    staged.mkdir(parents=True)

    # Assets first, so that toc files overwrite nothing they should not.
    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8")) or {}
    for name in ASSET_DIRS + ("chapters",):
        base = root / name
        if base.is_dir():
            for path in base.rglob("*"):
                if (path.is_file() and path.suffix != ".ipynb"
                        and not SKIP_PARTS.intersection(path.relative_to(root).parts)):
                    _copy(path, staged / path.relative_to(root))
    extra = [config.get("logo"), (config.get("html") or {}).get("favicon"),
             *(config.get("bibtex_bibfiles") or []), "_toc.yml"]
    for name in extra:
        if name and (root / name).is_file():
            _copy(root / name, staged / name)

    for path in book.toc_files(root):
        dst = staged / path.relative_to(root)
        if path.suffix != ".ipynb":
            _copy(path, dst)
            continue
        notebooks.append(path)
        try:
            nb = _staged_notebook(root, path)
        except BuildError as exc:
            problems.append(str(exc))
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, dst)
    if problems:
        raise BuildError(
            "cannot build from the executed notebooks; run `pytest` first (or `make"
            " test`):\n  "
            + "\n  ".join(problems)
        )

    config.setdefault("execute", {})["execute_notebooks"] = "off"
    try:  # MathJax into the build (_config.yml: html_extra_path, mathjax_path)
        fetch_mathjax.install(staged / "_mathjax")
    except fetch_mathjax.MathJaxError as exc:
        raise BuildError(str(exc)) from None
    (staged / "_config.yml").write_text(
        "# Staged by scripts/build_book.py: notebooks carry the outputs of the last"
        " nbval run.\n"
        + yaml.safe_dump(config, sort_keys=False, allow_unicode=True),
        encoding="utf-8",
    )
    return notebooks


def build(root: Path, staged: Path) -> tuple[int, list[str]]:
    """Run jupyter-book on ``staged``; return (exit status, warning lines)."""
    for old in ("html", ".doctrees", "jupyter_execute"):
        shutil.rmtree(root / "_build" / old, ignore_errors=True)
    exe = Path(sys.executable).parent / "jupyter-book"
    cmd = [
        str(exe) if exe.exists() else "jupyter-book", "build",
        str(staged.relative_to(root)), "--path-output", ".", "--all", "-W", "-n",
        "--keep-going"
    ]
    print("$", " ".join(cmd), flush=True)
    env = {**os.environ, "NO_COLOR": "1"}
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            text=True, bufsize=1, env=env)
    warnings = []
    assert proc.stdout is not None
    for line in proc.stdout:
        sys.stdout.write(line)
        if WARNING_RE.search(line):
            # Name the source file, not its staged copy.
            warnings.append(
                ANSI_RE.sub("", line.rstrip()).replace(f"{staged}{os.sep}", ""))
    return proc.wait(), warnings


def timing_table(root: Path, notebooks: list[Path], build_seconds: float | None) -> str:
    records: dict[str, dict] = {}
    for path in sorted((root / book.EXECUTED_DIR).glob("timings-*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for name, rec in data.items():
            if name not in records or rec.get("finished", "") > records[name].get(
                    "finished", ""):
                records[name] = rec
    lines = ["| Notebook | Seconds | Status | Cells run | Worker | Finished (UTC) |",
             "|---|---:|---|---:|---|---|"]
    total = 0.0
    for path in notebooks:
        name = path.relative_to(root).as_posix()
        rec = records.get(name)
        if rec is None:
            lines.append(f"| {name} | n/a | not run | | | |")
            continue
        total += rec["seconds"]
        lines.append(
            f"| {name} | {rec['seconds']:.1f} | {rec['status']} |"
            f" {rec.get('cells_run', '')} | {rec.get('worker', '')} |"
            f" {rec.get('finished', '')} |"
        )
    lines.append(f"| **total (sum)** | {total:.1f} | | | | |")
    if build_seconds is not None:
        lines.append(
            f"\nHTML build (jupyter-book, no execution): {build_seconds:.1f} s")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="book root (default: %(default)s)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    staged = root / "_build" / "staged"
    try:
        notebooks = stage(root, staged)
    except BuildError as exc:
        print(f"build_book: error: {exc}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    status, warnings = build(root, staged)
    seconds = time.perf_counter() - t0

    table = timing_table(root, notebooks, seconds)
    (root / "_build" / "notebook-timings.md"
     ).write_text("# Notebook timings (last nbval run)\n\n" + table)
    print("\n" + table)
    if status != 0 or warnings:
        print(
            f"build_book: error: jupyter-book exited with {status}, {len(warnings)}"
            " warning/error line(s):",
            file=sys.stderr,
        )
        for line in warnings:
            print("  " + line, file=sys.stderr)
        return status or 1
    print(
        f"build_book: built {root / '_build' / 'html'} with no warnings in"
        f" {seconds:.1f} s"
    )
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from check_html import (
        answer_leaks,
    )  # scripts/check_html.py: no answer shown without a click
    leaks = answer_leaks(root / "_build" / "html", root)
    for line in leaks:
        print(f"build_book: error: {line}", file=sys.stderr)
    if not leaks:
        print(
            "build_book: no answer is visible without a click (scripts/check_html.py)")
    return 1 if leaks else 0


if __name__ == "__main__":
    sys.exit(main())
