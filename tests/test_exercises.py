"""The exercise pattern of every chapter (lib.exercises) and its helpers."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest

from lib.exercises import (answer_regions, chapter_number, exercise_rows,
                           exercise_table, lib_names, notebook_seconds, read_exercises,
                           replace_answers, structure_problems)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import book  # noqa: E402  (tests/book.py)

CHAPTERS = [p for p in book.toc_notebooks(ROOT)
            if p.parent.name == "chapters" and p.name[:2].isdigit()]


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.name for p in CHAPTERS])
def test_exercises_follow_the_pattern(path):
    assert structure_problems(path) == []


def test_exercise_labels_are_unique_and_numbered_per_chapter():
    exercises = [e for p in CHAPTERS for e in read_exercises(p)]
    assert len(exercises) >= 26
    labels = [e.label for e in exercises]
    assert len(labels) == len(set(labels))
    for e in exercises:
        assert e.number.split(".")[0] == str(chapter_number(e.notebook))
        assert e.title and e.kind in ("code",
                                      "proof") and e.points > 0 and e.minutes > 0


def _exercise_cells(label="ex-a", number="0.1",
                    check="# Checks (exact).\nassert y == 2"):
    meta = {"label": label, "number": number, "kind": "code", "points": 1, "minutes": 5}
    cells = [
        nbformat.v4.new_markdown_cell(f"```{{exercise}} {number} T\n:label: {label}\n"
                                      ":nonumber:\n\nDo it.\n```"),
        nbformat.v4.new_code_cell("x = 1\n# BEGIN SOLUTION\ny = 2\n# END SOLUTION"),
        nbformat.v4.new_code_cell(check),
        nbformat.v4.new_markdown_cell(
            f"```{{solution}} {label}\n:class: dropdown\n\ny = 2\n```"),
    ]
    tags = [[], ["hide-cell"], ["hide-output"], []]
    for cell, role, tag in zip(cells, ("exercise", "answer", "check", "solution"),
                               tags):
        cell.metadata = {"tags": tag, "exercise": {**meta, "role": role}}
    return cells


def _write(tmp_path, cells, name="00_x.ipynb"):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# T"), *cells])
    path = tmp_path / name
    nbformat.write(nb, path)
    return path


def test_a_correct_exercise_passes(tmp_path):
    assert structure_problems(_write(tmp_path, _exercise_cells())) == []
    [ex] = read_exercises(tmp_path / "00_x.ipynb")
    assert (ex.label, ex.number, ex.title, ex.points, ex.cells) == ("ex-a", "0.1", "T",
                                                                    1, [1, 2, 3, 4])


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda c: c.pop(2), "expected the check cell"),  # no check cell
        (lambda c: c.insert(1, c.pop(3)), "expected the answer cell"),  # solution first
        (lambda c: setattr(c[1], "source", "y = 2"), "region"),  # no answer region
        (lambda c: setattr(c[2], "source", "# Checks (exact).\nprint(y)"),
         "assertions only"),
        (lambda c: setattr(c[2], "source", "assert y == 2"), "tolerances"),
        (lambda c: c.insert(0, nbformat.v4.new_code_cell("y = 0")),
         "only the answer"),  # stale y
        (lambda c: c[1].metadata.update(tags=[]), "collapsed"),
        (lambda c: c[2].metadata.update(tags=[]), "collapsed"),
        (lambda c: c[0].metadata["exercise"].update(number="0.2"), "number"),
        (lambda c: c[0].metadata["exercise"].update(kind="essay"), "kind"),
        (lambda c: c[3].metadata["exercise"].update(label="ex-b"),
         "expected the solution cell"),
        (lambda c: c.append(nbformat.v4.new_markdown_cell("```{solution} ex-a\n```")),
         "outside"),
    ])
def test_any_break_of_the_pattern_fails(tmp_path, breakage, message):
    cells = _exercise_cells()
    breakage(cells)
    problems = structure_problems(_write(tmp_path, cells))
    assert any(message in p for p in problems), problems


def test_answer_regions_and_their_replacement():
    source = "a = 1\n    # BEGIN SOLUTION\n    b = 2\n    # END SOLUTION\nc = 3"
    assert answer_regions(source) == [(1, 3)]
    assert replace_answers(source, "raise NotImplementedError") == (
        "a = 1\n    raise NotImplementedError\nc = 3")
    for bad in ("# BEGIN SOLUTION\nx", "# END SOLUTION",
                "# BEGIN SOLUTION\n# BEGIN SOLUTION"):
        with pytest.raises(ValueError, match="source"):
            answer_regions(bad)
    with pytest.raises(ValueError, match="path"):
        chapter_number("preface.ipynb")


def test_lib_names_and_the_instructor_table(tmp_path):
    cells = _exercise_cells()
    cells[1].source = (
        "x = 1\n# BEGIN SOLUTION\ny = foo(2) + lib.set_seed(0) + CONST\n# END SOLUTION"
    )
    imports = nbformat.v4.new_code_cell(
        "import lib\nfrom lib.mod import foo, CONST, unused")
    (tmp_path / "chapters").mkdir()
    path = _write(tmp_path / "chapters", [imports, *cells], name="03_x.ipynb")
    [ex] = read_exercises(path)
    assert lib_names(path, ex) == ["lib.mod.foo", "lib.set_seed"]         # no constants
    (tmp_path / "_build" / "executed").mkdir(parents=True)
    (tmp_path / "_build" / "executed" / "timings-main.json").write_text(json.dumps(
        {"chapters/03_x.ipynb": {"seconds": 12.3, "finished": "2026-01-01T00:00:00"}}))
    assert notebook_seconds(tmp_path) == {"chapters/03_x.ipynb": 12.3}
    [row] = exercise_rows(tmp_path)
    assert row == {"chapter": "03_x", "exercise": "0.1 T", "kind": "code", "minutes": 5,
                   "points": 1, "lib": ["mod.foo", "set_seed"], "seconds": 12.3}
    table = exercise_table(tmp_path)
    assert (
        "<td>0.1 T</td>" in table
        and "<code>mod.<wbr>foo</code>" in table
        and "12 s" in table
    )


def test_the_book_table_has_every_exercise():
    rows = exercise_rows(ROOT)
    assert len(rows) == sum(len(read_exercises(p)) for p in CHAPTERS)
    assert sum(r["points"] for r in rows) > 0
