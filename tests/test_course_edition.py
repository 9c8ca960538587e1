"""The course edition (scripts/course_edition.py): student notebooks, masters, grading.

The grading tests run ``otter assign`` and ``otter run`` for real. By default they grade
one short chapter (the preface, about a minute); ``GDT_GRADE_ALL=1`` grades every
chapter with exercises, with one single-answer notebook per exercise (tens of minutes).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from lib.exercises import answer_regions, read_exercises

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import course_edition as ce  # noqa: E402  (scripts/course_edition.py)

CHAPTERS = ce.chapters_with_exercises()
GRADE_ALL = os.environ.get("GDT_GRADE_ALL") == "1"
GRADED = CHAPTERS if GRADE_ALL else [
    p for p in CHAPTERS if p.name == "00_preface.ipynb"
]


def _answer_texts(path: Path) -> list[str]:
    """The non-blank lines inside the answer regions of a chapter."""
    nb = nbformat.read(path, as_version=4)
    texts = []
    for cell in nb.cells:
        if cell.metadata.get("exercise", {}).get("role") == "answer":
            lines = cell.source.splitlines()
            for begin, end in answer_regions(cell.source):
                texts += [line.strip() for line in lines[begin + 1:end] if line.strip()]
    return texts


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.name for p in CHAPTERS])
def test_student_notebook_has_no_answers(path):
    nb = ce.student_notebook(path)
    text = "\n".join(c.source for c in nb.cells)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "```{solution}" not in text and "BEGIN SOLUTION" not in code
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    original = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells
                         if c.cell_type == "code"
                         and c.metadata.get("exercise", {}).get("role") != "answer")
    # Every answer line is gone, except lines the chapter also has outside the answers.
    leaked = [t for t in _answer_texts(path) if t in code and t not in original]
    assert not leaked
    for ex in read_exercises(path):
        assert f"Exercise {ex.number} ({ex.label})" in code
        if ex.kind == "proof":
            assert f"written answer to Exercise {ex.number}" in text
    bootstrap = next(c for c in nb.cells if c.cell_type == "code").source
    assert bootstrap.startswith(ce.STUDENT_PREFIX.splitlines()[0])
    compile(bootstrap, "bootstrap", "exec")


def test_student_bootstrap_installs_the_wheel_first(tmp_path, monkeypatch):
    chapter = 'from pathlib import Path\nFOUND = Path("lib/BOOK.txt").is_file()\n'
    out = ce.student_bootstrap(chapter)
    assert out.endswith(chapter) and "lib/BOOK.txt" in out[:-len(chapter)]
    # Run it in an empty directory with a wheel holding lib/BOOK.txt: lib lands in
    # the cwd.
    wheel = tmp_path / "gd_transformers_book-0.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("lib/__init__.py", "")
        zf.writestr("lib/BOOK.txt", "x")
        zf.writestr(
            "gd_transformers_book-0.0.0.dist-info/METADATA",
            "Metadata-Version: 2.1\nName: gd-transformers-book\nVersion: 0.0.0\n")
        zf.writestr("gd_transformers_book-0.0.0.dist-info/WHEEL",
                    "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr("gd_transformers_book-0.0.0.dist-info/RECORD", "")
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(out, "bootstrap", "exec"), scope)
    assert scope["FOUND"] and (tmp_path / "lib" / "__init__.py").is_file()
    with pytest.raises(ValueError, match="source"):
        ce.student_bootstrap("import numpy")


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.name for p in CHAPTERS])
def test_master_notebook_has_one_question_per_exercise(path):
    nb = ce.master_notebook(path, path.stem)
    raw = [c.source.split("\n")[0] for c in nb.cells if c.cell_type == "raw"]
    n = len(read_exercises(path))
    assert raw[0] == "# ASSIGNMENT CONFIG"
    assert raw[1:] == ["# BEGIN QUESTION", "# BEGIN SOLUTION", "# END SOLUTION",
                       "# BEGIN TESTS", "# END TESTS", "# END QUESTION"] * n
    assert not any("{solution}" in c.source for c in nb.cells)


# ------------------------------------------------------------------------------ grading
def _otter_run(autograder: Path, notebook: Path,
               out: Path) -> dict[str, tuple[float, float]]:
    """Grade ``notebook`` with ``otter run``; {exercise label: (score, max score)}."""
    out.mkdir(parents=True, exist_ok=True)
    env = {
        k: v
        for k, v in os.environ.items() if k != "PYTHONPATH"
    }  # lib from the autograder
    subprocess.run([
        sys.executable, "-m", "otter", "run", "-a",
        str(autograder), "-o",
        str(out),
        str(notebook)
    ], check=True, env=env, cwd=out, stdout=subprocess.DEVNULL)
    results = json.loads((out / "results.json").read_text())
    return {
        t["name"]: (t["score"], t["max_score"])
        for t in results["tests"] if "score" in t
    }


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    assert ce.main(
        ["--out", str(out), "--skip-html", "--only", *[p.name for p in GRADED]]) == 0
    return out


def test_student_edition_holds_no_answer(course, tmp_path):
    assert ce.student_leaks(course, GRADED) == []
    # The check itself finds an answer copied into a student notebook.
    shutil.copytree(course / "notebooks", tmp_path / "notebooks")
    student = tmp_path / "notebooks" / GRADED[0].name
    shutil.copy(course / "instructor" / GRADED[0].name, student)
    assert ce.student_leaks(tmp_path, GRADED)


@pytest.mark.parametrize("path", GRADED, ids=[p.name for p in GRADED])
def test_grading(course, path, tmp_path):
    exercises = read_exercises(path)
    points = {e.label: e.points for e in exercises}
    autograder = course / "autograder" / f"{path.stem}.zip"

    # The reference solutions get full marks.
    full = _otter_run(autograder, course / "instructor" / path.name,
                      tmp_path / "solution")
    assert full == {label: (float(p), float(p)) for label, p in points.items()}

    # The untouched student notebook gets zero on every exercise, and the grader
    # finishes.
    student = course / "notebooks" / path.name
    zero = _otter_run(autograder, student, tmp_path / "student")
    assert zero == {label: (0.0, float(p)) for label, p in points.items()}

    # Exactly one exercise answered (copied from the solution): exactly its points.
    solution_nb = nbformat.read(course / "instructor" / path.name, as_version=4)
    answers = {c.metadata["exercise"]["label"]: c.source for c in solution_nb.cells
               if c.metadata.get("exercise", {}).get("role") == "answer"}
    for ex in exercises if GRADE_ALL else exercises[:1]:
        nb = nbformat.read(student, as_version=4)
        for cell in nb.cells:
            meta = cell.metadata.get("exercise", {})
            if meta.get("role") == "answer" and meta["label"] == ex.label:
                cell.source = answers[ex.label]
        one = tmp_path / f"one-{ex.label}" / path.name
        one.parent.mkdir()
        nbformat.write(nb, one)
        got = _otter_run(autograder, one, one.parent / "out")
        assert got == {label: (float(p) if label == ex.label else 0.0, float(p))
                       for label, p in points.items()}, ex.label
