#!/usr/bin/env python3
"""Check that the built HTML book gives no answer away without a click.

For every chapter with exercises, in ``_build/html/chapters/<chapter>.html``: each
answer cell (tag ``exercise-answer``) sits entirely inside a collapsed ``<details>``
toggle, every output of a check cell (tag ``exercise-check``) too, each solution is a
dropdown, and no line of an answer region nor any sentence of a solution appears in the
text that is visible without a click.
``scripts/build_book.py`` runs this after every build; ``--html DIR`` checks another
build.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat
from bs4 import BeautifulSoup

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
import book  # noqa: E402  (tests/book.py)
from lib.exercises import answer_regions, read_exercises  # noqa: E402

_SPACE = re.compile(r"\s+")


def _norm(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def secrets(path: Path) -> tuple[list[str], list[str]]:
    """(answer lines, solution sentences) of a chapter that must stay hidden:
    answer-region lines that occur nowhere else in the chapter's code, and the
    plain-prose sentences (no math, roles or code) of its solutions."""
    nb = nbformat.read(path, as_version=4)
    other_code, answers, prose = [], [], []
    for cell in nb.cells:
        role = cell.metadata.get("exercise", {}).get("role")
        if role == "answer":
            lines = cell.source.splitlines()
            for begin, end in answer_regions(cell.source):
                answers += [_norm(line) for line in lines[begin + 1:end]]
        elif role == "solution":
            body = "\n".join(line for line in cell.source.splitlines()
                             if not line.startswith(("```", ":")))
            prose += [_norm(s) for s in re.split(r"(?<=[.:;])\s+|\n\n", body)]
        elif cell.cell_type == "code":
            other_code.append(_norm(cell.source))
    code = "\n".join(other_code)
    answers = [
        a for a in answers if len(a) >= 12 and not a.startswith("#") and a not in code
    ]
    prose = [s for s in prose if len(s) >= 40 and not re.search(r"[$`{}\\*_]", s)]
    return answers, prose


def page_problems(html: str, path: Path) -> list[str]:
    """Every answer that the page ``html`` of chapter ``path`` shows without a click."""
    name, n = path.name, len(read_exercises(path))
    soup = BeautifulSoup(html, "html.parser")
    problems = []
    answer_cells = soup.select("div.cell.tag_exercise-answer")
    check_cells = soup.select("div.cell.tag_exercise-check")
    solutions = soup.select("div.solution")
    if not (len(answer_cells) == len(check_cells) == len(solutions) == n):
        problems.append(
            f"{name}: {n} exercises but {len(answer_cells)} answer cells, "
            f"{len(check_cells)} check cells, {len(solutions)} solutions in the page")
    for cell in answer_cells:
        for part in cell.select("div.cell_input, div.cell_output"):
            if part.find_parent("details") is None:
                problems.append(f"{name}: an answer cell is shown without a toggle")
    for cell in check_cells:
        for part in cell.select("div.cell_output"):
            if part.find_parent("details") is None:
                problems.append(
                    f"{name}: a check cell's output is shown without a toggle")
    for sol in solutions:
        if "dropdown" not in sol.get("class", []):
            problems.append(f"{name}: solution {sol.get('id')} is not a dropdown")
    for hidden in soup.select("details, div.solution, div.dropdown"):
        hidden.decompose()
    visible = _norm(soup.get_text(" "))
    answers, prose = secrets(path)
    problems += [f"{name}: answer line visible: {a!r}" for a in answers if a in visible]
    problems += [
        f"{name}: solution text visible: {s[:60]!r}..." for s in prose if s in visible
    ]
    return problems


def answer_leaks(html_dir: Path, root: Path = ROOT) -> list[str]:
    """The problems of every chapter page with exercises under ``html_dir``."""
    problems = []
    for path in book.toc_notebooks(root):
        if path.parent.name != "chapters" or not read_exercises(path):
            continue
        page = html_dir / path.relative_to(root).with_suffix(".html")
        if not page.is_file():
            problems.append(f"{page}: missing")
            continue
        problems += page_problems(page.read_text(encoding="utf-8"), path)
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--html", type=Path, default=ROOT / "_build" / "html")
    args = parser.parse_args(argv)
    problems = answer_leaks(args.html)
    for p in problems:
        print(f"check_html: {p}", file=sys.stderr)
    if not problems:
        print(f"check_html: no answer visible without a click in {args.html}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
