"""Code lines fit the book's 88-column code blocks: notebook code cells, Python files.

Fix offenders with ``python scripts/wrap_lines.py FILE...`` (it keeps the syntax tree).
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import book  # noqa: E402  (tests/book.py)

LIMIT = 88
PY_DIRS = ("lib", "tests", "scripts", "browser", "_ext")


def long_lines(text: str, limit: int = LIMIT) -> list[tuple[int, int]]:
    """(line number, length) of every line longer than ``limit`` characters."""
    return [(i, len(line)) for i, line in enumerate(text.splitlines(), start=1)
            if len(line) > limit]


@pytest.mark.parametrize("rel", [p.relative_to(ROOT).as_posix()
                                 for p in book.toc_notebooks(ROOT)])
def test_notebook_code_cells_fit_88_columns(rel):
    nb = nbformat.read(ROOT / rel, as_version=4)
    problems = [f"code cell {n} ({cell.get('id')}), line {i}: {length} characters"
                for n, cell in enumerate(c for c in nb.cells if c.cell_type == "code")
                for i, length in long_lines(cell.source)]
    fix = f"python scripts/wrap_lines.py {rel}"
    assert not problems, (f"{rel}: lines over {LIMIT} characters ({fix}):\n  "
                          + "\n  ".join(problems))


def test_python_files_fit_88_columns():
    files = [ROOT / "conftest.py"] + [p for d in PY_DIRS
                                      for p in sorted((ROOT / d).rglob("*.py"))]
    problems = [f"{p.relative_to(ROOT)}:{i}: {length} characters" for p in files
                for i, length in long_lines(p.read_text(encoding="utf-8"))]
    fix = "python scripts/wrap_lines.py FILE..."
    assert not problems, (f"lines over {LIMIT} characters ({fix}):\n  "
                          + "\n  ".join(problems))


def test_long_lines_are_found():
    assert long_lines("short\n" + "x" * 89 + "\n" + "y" * 88) == [(2, 89)]
