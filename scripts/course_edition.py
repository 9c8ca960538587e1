#!/usr/bin/env python3
"""The course edition of the book (``make student``), generated from the chapters.

Writes under ``_build/student/``:

* ``notebooks/<chapter>.ipynb``: student notebooks: every answer region replaced by a
stub that
  raises ``NotImplementedError`` naming the exercise, no ``{solution}`` blocks, no
  outputs, a written-answer cell after every proof exercise, and a bootstrap cell (the
  chapter's, after a block that installs the library from the wheel next to the
  notebooks, so that it never fetches the repository, which holds the solutions); plus
  that wheel (``lib`` only);
* ``html/``: the book without solutions (sphinx-exercise ``hide_solutions``, answer
cells
  removed; outputs of the other cells from ``_build/executed/`` when current);
* ``autograder/<chapter>.zip``: one otter-grader autograder per chapter with exercises,
built
  by ``otter assign`` from a master notebook generated here
  (``master/<chapter>.ipynb``);
* ``instructor/<chapter>.ipynb``: the solution notebooks (the chapters, outputs
stripped).

The chapters are the single source: nothing here is kept by hand. Options: ``--only``
some chapters (file names), ``--skip-html``.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))
import book  # noqa: E402  (tests/book.py)
from lib.exercises import read_exercises, replace_answers  # noqa: E402

OUT = ROOT / "_build" / "student"
WRITTEN_ANSWER = (
    "**Your written answer to Exercise {number}.** Replace this text with your "
    "argument (graded by hand); the cells below compute and check the "
    "numerical part.")


def stub(ex) -> str:
    """The line that replaces the answer region of exercise ``ex``."""
    return (f'raise NotImplementedError("Exercise {ex.number} ({ex.label}): '
            'write your answer here")')


STUDENT_PREFIX = """\
# Student edition: the book's library (lib only: no chapters, no solutions) comes
# from the wheel handed out with these notebooks (next to them, or at GDT_LIB_WHEEL).
import os, pathlib, subprocess, sys
_here = pathlib.Path.cwd()
if not any((p / "{marker}").is_file() for p in [_here, *_here.parents]):
    _wheel = os.environ.get("GDT_LIB_WHEEL") or next(
        (str(w) for w in sorted(_here.glob("gd_transformers_book-*.whl"))), None)
    if _wheel is None:
        raise FileNotFoundError("no gd_transformers_book-*.whl next to this notebook: "
                                "ask your instructor for it, or set GDT_LIB_WHEEL")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--target", str(_here), _wheel], check=True)
"""


def student_bootstrap(source: str) -> str:
    """The student bootstrap: the chapter's bootstrap cell ``source``, preceded by a
    block that installs the library from the wheel shipped with the student
    notebooks into the working directory, where the chapter's bootstrap then finds
    it (so it never fetches the repository, which holds the solutions). The marker
    file the chapter's bootstrap looks for (``lib/BOOK.txt``, else
    ``lib/__init__.py``) is read from ``source``."""
    if "lib" not in source:
        raise ValueError("source: not a bootstrap cell (it does not mention lib)")
    marker = "lib/BOOK.txt" if "lib/BOOK.txt" in source else "lib/__init__.py"
    return STUDENT_PREFIX.format(marker=marker) + source


def _bootstrap_index(nb) -> int:
    return next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")


def student_notebook(path: Path) -> nbformat.NotebookNode:
    """The student notebook of a chapter (see the module docstring)."""
    nb = nbformat.read(path, as_version=4)
    exercises = {e.label: e for e in read_exercises(path)}
    first = _bootstrap_index(nb)
    nb.cells[first].source = student_bootstrap(nb.cells[first].source)
    cells = []
    for cell in nb.cells:
        meta = cell.metadata.get("exercise", {})
        role = meta.get("role")
        if role == "solution":
            continue
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        if role == "answer":
            cell.source = replace_answers(cell.source, stub(exercises[meta["label"]]))
            cell.metadata["tags"] = [
                t for t in cell.metadata.get("tags", []) if t != "hide-cell"
            ]
        if role == "check":
            # otter run checks the exercise right after this cell (not at the end).
            cell.metadata["otter"] = {"tests": [meta["label"]]}
        cells.append(cell)
        if role == "exercise" and meta.get("kind") == "proof":
            written = nbformat.v4.new_markdown_cell(
                WRITTEN_ANSWER.format(number=meta["number"]))
            written.metadata = {"exercise": {**meta, "role": "written-answer"}}
            cells.append(written)
    nb.cells = cells
    nb.metadata.pop("widgets", None)
    nb.metadata["otter"] = {"assignment_name": path.stem}    # the autograder checks it
    return nb


def master_notebook(path: Path, name: str) -> nbformat.NotebookNode:
    """An otter-grader master notebook of a chapter: each exercise becomes a
    question whose solution is the answer cell and whose test is the check cell."""
    nb = nbformat.read(path, as_version=4)
    config = {"name": name, "files": ["lib"], "export_cell": False, "init_cell": False,
              "check_all_cell": False, "run_tests": False, "solutions_pdf": False,
              "generate": {"pdf": False, "filtering": False},
              "tests": {"files": False}, "requirements": "requirements.txt",
              "overwrite_requirements": False}
    raw = nbformat.v4.new_raw_cell
    cells = [raw("# ASSIGNMENT CONFIG\n" + yaml.safe_dump(config, sort_keys=False))]
    for cell in nb.cells:
        meta = cell.metadata.get("exercise", {})
        role = meta.get("role")
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        if role == "exercise":
            cells += [
                raw(f"# BEGIN QUESTION\nname: {meta['label']}\npoints: {meta['points']}"
                    ), cell
            ]
        elif role == "answer":
            cells += [raw("# BEGIN SOLUTION"), cell, raw("# END SOLUTION")]
        elif role == "check":
            cells += [
                raw("# BEGIN TESTS"), cell,
                raw("# END TESTS"),
                raw("# END QUESTION")
            ]
        elif role != "solution":
            cells.append(cell)
    nb.cells = cells
    nb.metadata.pop("widgets", None)
    return nb


def build_wheel(dest: Path) -> Path:
    """A wheel of the library (``lib`` only) in ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(
    ) as tmp:  # build from a copy: no build/ in the checkout
        for name in ("pyproject.toml", "LICENSE"):
            shutil.copy2(ROOT / name, Path(tmp) / name)
        shutil.copytree(ROOT / "lib", Path(tmp) / "lib",
                        ignore=shutil.ignore_patterns("__pycache__"))
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                        str(dest), tmp], check=True)
    [wheel] = sorted(dest.glob("gd_transformers_book-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        extra = [
            n for n in zf.namelist()
            if not n.startswith(("lib/", "gd_transformers_book-"))
        ]
    if extra:
        raise RuntimeError(f"the library wheel holds more than lib/: {extra}")
    return wheel


def grading_requirements() -> str:
    """What grading a notebook needs besides otter: the library's dependencies
    (pyproject), pinned as in constraints.txt; torch from PyTorch's CPU index (no
    CUDA download)."""
    import tomllib
    deps = tomllib.loads(
        (ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    lines = ["--extra-index-url https://download.pytorch.org/whl/cpu"]
    for dep in deps:
        name = re.split(r"[<>=!~\[; ]", dep, maxsplit=1)[0].lower().replace("_", "-")
        lines.append(f"{name}=={pins[name]}" if name in pins else dep)
    return "\n".join(lines) + "\n"


def autograder(master: Path, name: str, dest: Path) -> Path:
    """Run ``otter assign`` on ``master`` (with lib/ next to it); return the
    autograder zip."""
    work = master.parent
    if not (work / "lib").exists():
        shutil.copytree(ROOT / "lib", work / "lib",
                        ignore=shutil.ignore_patterns("__pycache__"))
    (work / "requirements.txt").write_text(grading_requirements(), encoding="utf-8")
    out = work / f"otter-{name}"
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run([
        sys.executable, "-m", "otter", "assign", "--no-run-tests", master.name, out.name
    ], cwd=work, check=True, stdout=subprocess.DEVNULL)
    [zipped] = sorted((out / "autograder").glob("*.zip"))
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(zipped, dest)
    return dest


def _html_notebook(path: Path) -> nbformat.NotebookNode:
    """The chapter without answer cells and solutions, with the outputs of its
    executed copy when that copy is current (no outputs otherwise)."""
    nb = nbformat.read(path, as_version=4)
    executed = book.executed_path(ROOT, path)
    if executed.is_file():
        done = nbformat.read(executed, as_version=4)
        if book.cell_sources(done) == book.cell_sources(nb):
            for cell, ran in zip(nb.cells, done.cells):
                if cell.cell_type == "code":
                    cell.outputs, cell.execution_count = (
                        ran.outputs,
                        ran.execution_count,
                    )
    keep = []
    for cell in nb.cells:
        role = cell.metadata.get("exercise", {}).get("role")
        if role in ("answer", "solution"):
            continue
        if role == "check":
            cell.outputs = []
        keep.append(cell)
    nb.cells = keep
    nb.metadata.pop("widgets", None)
    return nb


def build_html(dest: Path) -> None:
    """The solution-free HTML book in ``dest`` (jupyter-book, nothing executed)."""
    staged = OUT / "staged"
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    for name in ("_toc.yml", "references.bib"):
        shutil.copy2(ROOT / name, staged / name)
    for entry in book.toc_entries(ROOT):
        for suffix in (".md", ".ipynb"):
            src = ROOT / (entry + suffix)
            if src.is_file():
                (staged / src.relative_to(ROOT)).parent.mkdir(
                    parents=True, exist_ok=True)
                if suffix == ".ipynb":
                    nbformat.write(_html_notebook(src), staged / src.relative_to(ROOT))
                else:
                    shutil.copy2(src, staged / src.relative_to(ROOT))
    for path in (ROOT / "chapters").rglob("*"):
        if path.is_file() and path.suffix != ".ipynb" and "checkpoints" not in str(
                path):
            (staged / path.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, staged / path.relative_to(ROOT))
    import build_book  # scripts/build_book.py: the reader book's assets and MathJax
    for name in build_book.ASSET_DIRS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, staged / name,
                            ignore=shutil.ignore_patterns("__pycache__"))
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    try:
        build_book.fetch_mathjax.install(staged / "_mathjax")
    except Exception as exc:  # offline, no package: MathJax from its default CDN
        print(f"course_edition: MathJax not bundled ({exc})", file=sys.stderr)
        for key in ("mathjax_path", "html_extra_path"):
            config.get("sphinx", {}).get("config", {}).pop(key, None)
    config["title"] = config.get("title", "") + " (student edition)"
    config.setdefault("execute", {})["execute_notebooks"] = "off"
    config.setdefault("sphinx", {}).setdefault("config", {})["hide_solutions"] = True
    config.pop("repository", None)
    html = config.setdefault("html", {})
    for key in ("use_repository_button", "use_issues_button", "use_edit_page_button"):
        html[key] = False
    config.pop("launch_buttons", None)
    (staged / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False),
                                        encoding="utf-8")
    subprocess.run([
        str(Path(sys.executable).parent / "jupyter-book"), "build",
        str(staged), "--path-output",
        str(OUT / "jb"), "--all", "-q"
    ], check=True, stdout=subprocess.DEVNULL)
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(OUT / "jb" / "_build" / "html", dest)


def student_leaks(out: Path, chapters: list[Path]) -> list[str]:
    """Answer lines and solution sentences of ``chapters`` found anywhere in the student
    notebooks or the student HTML under ``out`` (hidden or not): must be empty."""
    from bs4 import BeautifulSoup
    from check_html import _norm, secrets
    texts = {}
    for nb_path in sorted((out / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(nb_path, as_version=4)
        texts[nb_path] = _norm("\n".join(c.source for c in nb.cells))
    for page in sorted((out / "html").rglob("*.html")):
        soup = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
        texts[page] = _norm(soup.get_text(" "))
    problems = []
    for path in chapters:
        answers, prose = secrets(path)
        for where, text in texts.items():
            problems += [
                f"{where.relative_to(out)}: {s[:60]!r}" for s in answers + prose
                if s in text
            ]
    return problems


def chapters_with_exercises(only=None) -> list[Path]:
    paths = [p for p in book.toc_notebooks(ROOT) if p.parent.name == "chapters"]
    if only:
        paths = [p for p in paths if p.name in only or p.stem in only]
    return [p for p in paths if read_exercises(p)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*",
                        help="chapter notebooks (names) to process")
    parser.add_argument("--skip-html", action="store_true", help="do not build html/")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    out = args.out
    chapters = chapters_with_exercises(args.only)
    for sub in ("notebooks", "instructor", "autograder", "master"):
        shutil.rmtree(out / sub, ignore_errors=True)
        (out / sub).mkdir(parents=True)
    build_wheel(out / "notebooks")
    for path in chapters:
        nbformat.write(student_notebook(path), out / "notebooks" / path.name)
        solution = nbformat.read(path, as_version=4)
        for cell in solution.cells:
            if cell.cell_type == "code":
                cell.outputs, cell.execution_count = [], None
        solution.metadata["otter"] = {"assignment_name": path.stem}
        for (
            cell
        ) in solution.cells:  # otter run checks each exercise right after its check
            if cell.metadata.get("exercise", {}).get("role") == "check":
                cell.metadata["otter"] = {"tests": [cell.metadata["exercise"]["label"]]}
        nbformat.write(solution, out / "instructor" / path.name)
        master = out / "master" / path.name
        nbformat.write(master_notebook(path, path.stem), master)
        autograder(master, path.stem, out / "autograder" / f"{path.stem}.zip")
        print(f"{path.name}: {len(read_exercises(path))} exercises", flush=True)
    if not args.skip_html:
        build_html(out / "html")
    leaks = student_leaks(out, chapters)
    if leaks:
        print(
            "course_edition: error: answers in the student edition:\n  " +
            "\n  ".join(leaks), file=sys.stderr)
        return 1
    print(
        "course edition written to"
        f" {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out} in"
        f" {time.perf_counter() - start:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
