"""The book's exercises, read from the chapter notebooks (one machine-readable pattern).

Every exercise is four consecutive cells, each carrying ``metadata["exercise"]`` =
``{label, number, kind, points, minutes, role}``, with the roles in this order:

1. ``exercise`` (markdown): one ``{exercise}`` directive, ``:nonumber:``, its title
starting
   with the number ``"<chapter>.<k>"`` (exercises are numbered per chapter);
2. ``answer`` (code): the answer, its region(s) between ``# BEGIN SOLUTION`` and
   ``# END SOLUTION`` lines;
3. ``check`` (code): assertions only, the first line a comment stating the tolerances;
4. ``solution`` (markdown): the ``{solution}`` dropdown of the exercise.

``kind`` is ``"code"`` or ``"proof"`` (a written answer, checked numerically by the
cell).
"""
from __future__ import annotations

import ast
import builtins
import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

ROLES = ("exercise", "answer", "check", "solution")
KINDS = ("code", "proof")
BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
_EXERCISE_RE = re.compile(r"^```\{exercise\}[ \t]*(.*)$", re.M)
_LABEL_RE = re.compile(r"^:label:[ \t]*(\S+)", re.M)


@dataclass
class Exercise:
    """One exercise of a notebook; ``cells`` are the indices of its four cells."""

    notebook: str
    label: str
    number: str
    title: str
    kind: str
    points: int
    minutes: int
    cells: list[int] = field(default_factory=list)


def chapter_number(path: str | Path) -> int:
    """The chapter number of ``chapters/05_x.ipynb`` (5); ValueError for other names."""
    stem = Path(path).name
    if not stem[:2].isdigit():
        raise ValueError(
            f"path: expected a chapter notebook named NN_*.ipynb, got {stem!r}")
    return int(stem[:2])


def answer_regions(source: str) -> list[tuple[int, int]]:
    """(begin, end) line indices of the answer regions of ``source``; ValueError if
    unbalanced."""
    regions, begin = [], None
    for i, line in enumerate(source.splitlines()):
        text = line.strip()
        if text == BEGIN:
            if begin is not None:
                raise ValueError(f"source: nested {BEGIN!r} at line {i + 1}")
            begin = i
        elif text == END:
            if begin is None:
                raise ValueError(f"source: {END!r} without {BEGIN!r} at line {i + 1}")
            regions.append((begin, i))
            begin = None
    if begin is not None:
        raise ValueError(f"source: {BEGIN!r} at line {begin + 1} is never closed")
    return regions


def replace_answers(source: str, stub: str) -> str:
    """``source`` with every answer region (delimiters included) replaced by ``stub``,
    indented like the region's ``# BEGIN SOLUTION`` line."""
    lines = source.splitlines()
    out, last = [], 0
    for begin, end in answer_regions(source):
        indent = lines[begin][: len(lines[begin]) - len(lines[begin].lstrip())]
        out += lines[last:begin] + [indent + s for s in stub.splitlines()]
        last = end + 1
    return "\n".join(out + lines[last:])


def read_exercises(path: str | Path) -> list[Exercise]:
    """The exercises of a notebook, in order, from the metadata of their exercise
    cells."""
    nb = nbformat.read(path, as_version=4)
    found = []
    for i, cell in enumerate(nb.cells):
        meta = cell.metadata.get("exercise")
        if meta and meta.get("role") == "exercise":
            match = _EXERCISE_RE.search(cell.source)
            title = match.group(1).strip() if match else ""
            title = title[len(meta["number"]):].strip() if title.startswith(
                meta["number"]) else title
            found.append(
                Exercise(str(path), meta["label"], meta["number"], title, meta["kind"],
                         meta["points"], meta["minutes"], list(range(i, i + 4))))
    return found


def _bound_names(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def _loaded_names(tree: ast.AST) -> set[str]:
    return {
        n.id
        for n in ast.walk(tree)
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
    }


def _asserts_only(body: list[ast.stmt]) -> bool:
    for stmt in body:
        if isinstance(stmt, ast.Assert):
            continue
        if isinstance(stmt, (ast.For, ast.If)) and _asserts_only(
                stmt.body) and _asserts_only(stmt.orelse):
            continue
        return False
    return True


def structure_problems(path: str | Path) -> list[str]:
    """Every way in which the exercises of a notebook break the pattern (empty:
    none)."""
    nb = nbformat.read(path, as_version=4)
    chapter = chapter_number(path)
    problems, expected, count, bound_before = [], None, 0, set()
    for i, cell in enumerate(nb.cells):
        where = f"{Path(path).name} cell {i}"
        meta = cell.metadata.get("exercise")
        is_directive = cell.cell_type == "markdown" and "{exercise}" in cell.source
        if expected is None and meta is None:
            if (is_directive or "```{solution}" in cell.source
                    or (cell.cell_type == "code" and BEGIN in cell.source)):
                problems.append(
                    f"{where}: exercise material outside the exercise pattern")
            if cell.cell_type == "code":
                try:
                    bound_before |= _bound_names(ast.parse(cell.source))
                except SyntaxError:
                    pass
            continue
        role = (meta or {}).get("role")
        if expected is None:
            if role != "exercise":
                problems.append(
                    f"{where}: role {role!r} where an exercise cell was expected")
                continue
            count += 1
            label, number = meta.get("label"), f"{chapter}.{count}"
            current = {
                k: meta.get(k)
                for k in ("label", "number", "kind", "points", "minutes")
            }
            if meta.get("number") != number:
                problems.append(
                    f"{where}: number {meta.get('number')!r}, expected {number!r}")
            if meta.get("kind") not in KINDS:
                problems.append(f"{where}: kind {meta.get('kind')!r} not in {KINDS}")
            for key in ("points", "minutes"):
                if not (isinstance(meta.get(key), int) and meta[key] > 0):
                    problems.append(f"{where}: {key} must be a positive integer")
            heads = _EXERCISE_RE.findall(cell.source)
            if (cell.cell_type != "markdown" or len(heads) != 1
                    or not heads[0].startswith(f"{number} ")):
                problems.append(
                    f"{where}: one {{exercise}} directive titled '{number} ...'"
                    " expected"
                )
            if _LABEL_RE.findall(cell.source) != [label
                                                  ] or ":nonumber:" not in cell.source:
                problems.append(
                    f"{where}: the directive needs :label: {label} and :nonumber:")
            if "{solution}" in cell.source:
                problems.append(
                    f"{where}: the solution must be its own cell, after the check")
            expected = "answer"
            continue
        if role != expected or {k: meta.get(k) for k in current} != current:
            problems.append(
                f"{where}: expected the {expected} cell of {current['label']}, got "
                f"role {role!r}, label {(meta or {}).get('label')!r}")
            expected = None
            continue
        tags = set(cell.metadata.get("tags", []))
        if role == "answer":
            try:
                regions = answer_regions(cell.source)
                answer_tree = ast.parse(cell.source)
            except (ValueError, SyntaxError) as err:
                problems.append(f"{where}: {err}")
                regions, answer_tree = [(0, 0)], ast.parse("")
            if cell.cell_type != "code" or not regions:
                problems.append(
                    f"{where}: a code cell with a '{BEGIN}' region expected")
            if "hide-cell" not in tags and not {"hide-input", "hide-output"} <= tags:
                problems.append(
                    f"{where}: the answer cell must be collapsed (tag hide-cell)")
            expected = "check"
        elif role == "check":
            try:
                tree = ast.parse(cell.source)
            except SyntaxError as err:
                problems.append(f"{where}: {err}")
                tree = ast.parse("")
            first = cell.source.lstrip().splitlines()[:1]
            if cell.cell_type != "code" or not tree.body or not _asserts_only(
                    tree.body):
                problems.append(f"{where}: the check cell must hold assertions only")
            if not first or not first[0].startswith("#") or not re.search(
                    r"toleran|exact|within|below|above", first[0], re.I):
                problems.append(
                    f"{where}: the check must start with a comment stating its "
                    "tolerances ('tolerance ...' or 'exact')")
            if "hide-output" not in tags and "hide-cell" not in tags:
                problems.append(
                    f"{where}: the check's output must be collapsed (tag hide-output)")
            fresh = _loaded_names(tree) & (_bound_names(answer_tree) - bound_before
                                           - set(dir(builtins)))
            if not fresh:
                problems.append(
                    f"{where}: the check uses no name that only the answer cell "
                    "defines, so an unanswered exercise could pass it")
            bound_before |= _bound_names(answer_tree)
            expected = "solution"
        else:
            heads = re.findall(r"^```\{solution\}[ \t]*(\S+)", cell.source, re.M)
            if cell.cell_type != "markdown" or heads != [current["label"]] \
                    or ":class: dropdown" not in cell.source:
                problems.append(
                    f"{where}: one {{solution}} {current['label']} dropdown expected")
            if "{exercise}" in cell.source:
                problems.append(f"{where}: the next exercise must be its own cell")
            expected = None
    if expected is not None:
        problems.append(
            f"{Path(path).name}: the last exercise ends before its {expected} cell")
    return problems


def lib_names(path: str | Path, exercise: Exercise) -> list[str]:
    """The ``lib`` functions and classes an exercise's answer and check cells use, as
    ``"lib.module.name"``, resolved through the notebook's ``from lib... import``
    lines."""
    nb = nbformat.read(path, as_version=4)
    imported: dict[str, str] = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module
                                                     or "").split(".")[0] == "lib":
                for alias in node.names:
                    imported[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    used = set()
    for i in exercise.cells[1:3]:
        tree = ast.parse(nb.cells[i].source)
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and node.id in imported:
                used.add(imported[node.id])
            elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                  and node.value.id == "lib"):
                used.add(f"lib.{node.attr}")
    return sorted(n for n in used if not n.rsplit(".", 1)[-1].isupper())  # no constants


def notebook_seconds(root: str | Path) -> dict[str, float]:
    """Wall-clock seconds of each notebook's last test run
    (``_build/executed/timings-*.json``, written by the book's conftest.py), by path
    relative to ``root``; empty if none ran."""
    import json
    latest: dict[str, dict] = {}
    for path in sorted(Path(root).glob("_build/executed/timings-*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for name, rec in data.items():
            if rec.get("finished", "") >= latest.get(name, {}).get("finished", ""):
                latest[name] = rec
    return {name: rec["seconds"] for name, rec in latest.items() if "seconds" in rec}


def exercise_rows(root: str | Path) -> list[dict]:
    """One row per exercise of the chapters ``root/chapters/NN_*.ipynb``, in chapter
    order: chapter, exercise (number and title), kind, estimated minutes, points,
    the ``lib`` names it uses, and the chapter notebook's run time (s) in the last
    test run (None if not run)."""
    root = Path(root)
    seconds = notebook_seconds(root)
    rows = []
    for path in sorted((root / "chapters").glob("[0-9][0-9]_*.ipynb")):
        for ex in read_exercises(path):
            rows.append({"chapter": path.stem, "exercise": f"{ex.number} {ex.title}",
                         "kind": ex.kind, "minutes": ex.minutes, "points": ex.points,
                         "lib": [n[4:] for n in lib_names(path, ex)],
                         "seconds": seconds.get(f"chapters/{path.name}")})
    return rows


def exercise_table(root: str | Path) -> str:
    """:func:`exercise_rows` as an HTML table (math in titles as MathJax
    ``\\(...\\)``)."""
    import html
    head = [
        "Chapter", "Exercise", "Kind", "Minutes", "Points", "lib used",
        "Chapter run time"
    ]
    # A narrow page column: the table scrolls sideways instead of being clipped, and
    # long library names break at their dots.
    out = [
        '<div style="overflow-x: auto">',
        '<table style="font-size: 0.85em">', "<thead><tr>" + "".join(
            f"<th>{h}</th>" for h in head) + "</tr></thead>", "<tbody>"
    ]
    for r in exercise_rows(root):
        title = re.sub(r"\$([^$]+)\$", r"\\(\1\\)", html.escape(r["exercise"]))
        names = "<br>".join(
            f"<code>{html.escape(n).replace('.', '.<wbr>')}</code>" for n in r["lib"]
        ) or "none"
        run = f"{r['seconds']:.0f} s" if r["seconds"] is not None else "not run yet"
        cells = [r["chapter"], title, r["kind"], r["minutes"], r["points"], names, run]
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return "\n".join(out + ["</tbody>", "</table>", "</div>"])
