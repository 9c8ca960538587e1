"""Structure of the book: _toc.yml, stored notebooks, chapter conventions, test
plumbing."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import book  # noqa: E402  (tests/book.py)

TOC_NOTEBOOKS = book.toc_notebooks(ROOT)
NB_IDS = [p.relative_to(ROOT).as_posix() for p in TOC_NOTEBOOKS]


def _env() -> dict:
    """Environment for a child pytest: nothing inherited from this (possibly xdist)
    run."""
    return {
        k: v
        for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_CORE_"))
    }


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _markdown(nb) -> str:
    return "\n\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


def bootstrap_source(contributing: Path = ROOT / "CONTRIBUTING.md") -> str:
    """The python block under the '### The bootstrap cell' heading of
    CONTRIBUTING.md."""
    text = contributing.read_text(encoding="utf-8")
    match = re.search(r"^#+ The bootstrap cell.*?^```python\n(.*?)^```", text,
                      re.S | re.M)
    assert (
        match
    ), "CONTRIBUTING.md has no '### The bootstrap cell' section with a python block"
    return match.group(1).strip()


# ---------------------------------------------------------------------------- _toc.yml
def test_toc_entries_exist():
    missing = book.missing_toc_entries(ROOT)
    assert not missing, f"_toc.yml lists files that do not exist: {missing}"


def test_every_chapter_notebook_is_in_toc():
    listed = {p.resolve() for p in TOC_NOTEBOOKS}
    unlisted = [
        p.relative_to(ROOT).as_posix()
        for p in sorted((ROOT / "chapters").glob("*.ipynb"))
        if p.resolve() not in listed
    ]
    assert not unlisted, (
        "notebooks missing from _toc.yml (they would be neither tested nor built):"
        f" {unlisted}"
    )


def test_toc_parsing(tmp_path):
    (tmp_path / "a").mkdir()
    for name in [
            "intro.md", "a/one.ipynb", "a/two.ipynb", "a/three.md", "a/g1.ipynb",
            "a/g2.ipynb"
    ]:
        (tmp_path / name).write_text("{}")
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: intro\nparts:\n  - caption: P\n    chapters:\n"
        "      - file: a/one.ipynb\n        sections:\n          - file: a/three\n"
        "          - file: a/missing\n      - file: a/two\n      - glob: a/g*\n")
    assert book.toc_entries(tmp_path) == [
        "intro", "a/one", "a/three", "a/missing", "a/two", "a/g1", "a/g2"
    ]
    assert book.missing_toc_entries(tmp_path) == ["a/missing"]
    rel = [p.relative_to(tmp_path).as_posix() for p in book.toc_notebooks(tmp_path)]
    assert rel == ["a/one.ipynb", "a/two.ipynb", "a/g1.ipynb", "a/g2.ipynb"]


def _collected_notebooks(root: Path, extra_args=()) -> set[str]:
    """Notebook files of the node ids that ``pytest --collect-only`` reports in
    ``root``."""
    # `-n 0` rather than `-p no:xdist`: the configured addopts contain `-n 2`,
    # which needs
    # the xdist plugin; `-n 0` keeps every other configured option as it is.
    cmd = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-n", "0",
           "--nbval", "--nbval-current-env", *extra_args]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=_env(),
                          stdin=subprocess.DEVNULL, timeout=300)
    assert proc.returncode in (0,
                               5), f"collection failed:\n{proc.stdout}\n{proc.stderr}"
    ids = [line.strip() for line in proc.stdout.splitlines() if "::" in line]
    return {i.split("::")[0] for i in ids if i.split("::")[0].endswith(".ipynb")}


def test_nbval_collects_exactly_the_toc_notebooks():
    # No path arguments: pytest uses the configured testpaths.
    assert _collected_notebooks(ROOT) == set(NB_IDS)


# ----------------------------------------------------------------- stored notebooks
@pytest.mark.parametrize("rel", NB_IDS)
def test_notebook_is_valid_and_stripped(rel):
    nb = _read(ROOT / rel)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    dirty = [
        i for i, c in enumerate(_code_cells(nb))
        if c.outputs or c.execution_count is not None
    ]
    assert (
        not dirty
    ), f"{rel}: code cells {dirty} have outputs or execution counts; run `make strip`"
    assert "widgets" not in nb.metadata, f"{rel}: stored widget state; run `make strip`"


@pytest.mark.parametrize("rel", NB_IDS)
def test_notebook_starts_with_title_and_bootstrap(rel):
    nb = _read(ROOT / rel)
    assert (
        nb.cells
        and nb.cells[0].cell_type == "markdown"
        and nb.cells[0].source.lstrip().startswith("# ")
    ), f"{rel}: the first cell must be a markdown title '# ...'"
    code = _code_cells(nb)
    assert code, f"{rel}: no code cell"
    assert code[0].source.strip() == bootstrap_source(), (
        f"{rel}: the first code cell must be the bootstrap cell of CONTRIBUTING.md,"
        " verbatim"
    )
    assert "remove-cell" in code[0].metadata.get(
        "tags", []), f"{rel}: bootstrap cell not tagged remove-cell"


@pytest.mark.parametrize("rel",
                         [r for r in NB_IDS if Path(r).name[:2].isdigit()])  # chapters
def test_notebook_has_summary_and_exercises(rel):
    text = _markdown(_read(ROOT / rel))
    assert re.search(r"^##\s+Summary\s*$", text,
                     re.M), f"{rel}: no '## Summary' heading"
    assert re.search(r"^##\s+Exercises\s*$", text,
                     re.M), f"{rel}: no '## Exercises' heading"
    exercises = re.findall(r"^\s*(?:`{3,}|:{3,})\{exercise\}", text, re.M)
    assert len(
        exercises
    ) >= 2, f"{rel}: {len(exercises)} {{exercise}} directive(s), need at least 2"


def test_bootstrap_cell_is_extracted():
    src = bootstrap_source()
    assert src.startswith(
        "# Make this book's `lib` importable") and "GDT_BOOK_REF" in src


# ----------------------------------------------------- output capture (conftest.py)
def _nb(*sources, cell_metadata=None):
    cells = [nbformat.v4.new_markdown_cell("# Title")]
    cells += [nbformat.v4.new_code_cell(s) for s in sources]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python"
    }
    return nb


def test_executed_notebook_fills_outputs():
    nb = _nb("print('a')", "skipped = 1", "1 + 1", "raise ValueError('boom')")
    captured = {
        0: [{
            "output_type": "stream",
            "name": "stdout",
            "text": "a\n"
        }],
        1: None,  # did not run
        2: [{
            "output_type": "execute_result",
            "data": {
                "text/plain": "2"
            },
            "metadata": {},
            "execution_count": 99
        }, {
            "output_type": "display_data",
            "data": {
                "text/plain": "W",
                book.WIDGET_VIEW_MIMETYPE: {}
            },
            "metadata": {}
        }, {
            "output_type": "display_data",
            "data": {
                book.WIDGET_VIEW_MIMETYPE: {
                    "model_id": "x"
                }
            }
        }, {
            "output_type": "clear_output"
        }],
        3: [{
            "output_type": "error",
            "ename": "ValueError",
            "evalue": "boom",
            "traceback": ["t"]
        }],
    }
    out = book.executed_notebook(nb, captured, metadata={"status": "failed"})
    nbformat.validate(out)
    code = _code_cells(out)
    assert [c.execution_count for c in code] == [1, None, 2, 3]
    assert code[0].outputs == [{
        "output_type": "stream",
        "name": "stdout",
        "text": "a\n"
    }]
    assert code[1].outputs == []
    assert code[2].outputs[0] == {
        "output_type": "execute_result",
        "data": {
            "text/plain": "2"
        },
        "metadata": {},
        "execution_count": 2
    }
    assert len(code[2].outputs) == 1  # widget views and clear_output dropped
    assert code[3].outputs[0].ename == "ValueError"
    assert out.metadata.gdt_execution == {"status": "failed"}
    assert _code_cells(nb)[0].outputs == []  # input not modified


def test_conftest_writes_executed_notebooks(tmp_path):
    """Run the real conftest.py on a tiny book: toc-only collection, outputs,
    timings, errors."""
    (tmp_path / "tests").mkdir()
    (tmp_path / "chapters").mkdir()
    shutil.copy(ROOT / "conftest.py", tmp_path / "conftest.py")
    shutil.copy(ROOT / "tests" / "book.py", tmp_path / "tests" / "book.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: chapters/good\nchapters:\n  - file: chapters/bad\n")
    nbformat.write(
        _nb("import os, sys\nprint('threads', os.environ.get('OMP_NUM_THREADS'))",
            "print('to stderr', file=sys.stderr)\n6 * 7",
            "from IPython.display import Markdown\ndisplay(Markdown('**md**'))"),
        tmp_path / "chapters" / "good.ipynb")
    nbformat.write(_nb("x = 1", "raise ValueError('boom')", "print('after', x)"),
                   tmp_path / "chapters" / "bad.ipynb")
    nbformat.write(_nb("raise SystemExit('not in the toc: must not run')"),
                   tmp_path / "chapters" / "unlisted.ipynb")

    env = _env()
    env.pop("OMP_NUM_THREADS", None)
    proc = subprocess.run([
        sys.executable, "-m", "pytest", "-c",
        str(tmp_path / "pytest.ini"), "--rootdir",
        str(tmp_path), "-p", "no:xdist", "-p", "no:cacheprovider", "--nbval",
        "--nbval-current-env", "-rA", "chapters"
    ], cwd=tmp_path, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL,
                          timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 1, log  # bad.ipynb fails
    assert "unlisted.ipynb" not in log
    assert "PASSED chapters/good.ipynb::Cell 2" in log, log
    assert "FAILED chapters/bad.ipynb::Cell 1" in log, log

    executed = tmp_path / "_build" / "executed" / "chapters"
    assert not (executed / "unlisted.ipynb").exists()
    good = _read(executed / "good.ipynb")
    nbformat.validate(good)
    code = _code_cells(good)
    assert [c.execution_count for c in code] == [1, 2, 3]
    assert code[0].outputs[0].text == "threads 1\n"
    assert {(o.output_type, o.get("name"))
            for o in code[1].outputs} == {("stream", "stderr"),
                                          ("execute_result", None)}
    assert [
        o.data["text/plain"] for o in code[1].outputs
        if o.output_type == "execute_result"
    ] == ["42"]
    assert code[2].outputs[0].output_type == "display_data" and "text/markdown" in code[
        2].outputs[0].data
    assert good.metadata.gdt_execution["status"] == "passed"

    bad = _read(executed / "bad.ipynb")
    assert bad.metadata.gdt_execution["status"] == "failed"
    bad_code = _code_cells(bad)
    assert bad_code[1].outputs[0].output_type == "error" and bad_code[1].outputs[
        0].ename == "ValueError"
    assert bad_code[2].outputs[
        0].text == "after 1\n"  # nbval goes on after a failing cell

    timings = json.loads(
        (tmp_path / "_build" / "executed" / "timings-main.json").read_text())
    assert set(timings) == {"chapters/good.ipynb", "chapters/bad.ipynb"}
    assert all(rec["seconds"] > 0 for rec in timings.values())


# ------------------------------------------------------------------ the size of the
# chapters
# Chapters show the science; helpers live in lib with tests. All chapters of _toc.yml
# together stay within these budgets, and none handles records itself with json or
# platform. Lines of code are physical lines of code cells, blank lines and comments
# included (the strictest count); only the bootstrap cell (stamped by
# scripts/stamp_repository.py, the same in every notebook) is not chapter code. Nested
# defs and methods count.
CODE_LINE_BUDGET = 3000
DEF_BUDGET = 70
_DEF_RE = re.compile(r"^\s*(?:async\s+)?def\s", re.M)
_IMPORT_RE = re.compile(
    r"^\s*(?:import\s+([\w.]+(?:\s*,\s*[\w.]+)*)|from\s+([\w.]+)\s+import\b)", re.M
)


def _chapter_code_cells(nb) -> list[str]:
    return [c.source for c in _code_cells(nb) if "GDT_BOOK_REPO" not in c.source]


def code_size(nb) -> tuple[int, int]:
    """(lines of its code cells, def statements in them) of one notebook, bootstrap
    cell excluded."""
    cells = _chapter_code_cells(nb)
    lines = sum(len(s.splitlines()) for s in cells)
    return lines, sum(len(_DEF_RE.findall(s)) for s in cells)


def imported_modules(nb) -> set[str]:
    """Top-level names of the modules a notebook's code cells import."""
    names = set()
    for source in _chapter_code_cells(nb):
        for plain, module in _IMPORT_RE.findall(source):
            for name in plain.split(",") if plain else [module]:
                names.add(name.strip().split(" ")[0].split(".")[0])
    return names


def test_code_size_counts_every_line_and_every_def():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "x = 1\n\n# a comment\n\ndef f():\n    def g():\n        pass\n    return g"
        ),
        nbformat.v4.new_markdown_cell("def not_code():\n    pass"),
        nbformat.v4.new_code_cell(
            "%matplotlib inline\nclass A:\n    def m(self):\n        pass\n"
            "    async def n(self):\n        pass\nf = lambda: 0  # no def\n"
            "y = (1 +\n     2)"),
        nbformat.v4.new_code_cell(
            "REPO = os.environ.get('GDT_BOOK_REPO')\nimport json"),
    ]
    # 8 lines (two blank, one comment) | 9 lines; the bootstrap cell does not count
    assert code_size(nb) == (17, 4)
    nb.cells.append(
        nbformat.v4.new_code_cell(
            "import os, json as j\nfrom platform import node\n"
            "from lib.settings import full_mode"
        )
    )
    assert imported_modules(nb) == {"os", "json", "platform", "lib"}


def test_chapters_stay_within_the_code_budget():
    sizes = {p.relative_to(ROOT).as_posix(): code_size(_read(p)) for p in TOC_NOTEBOOKS}
    lines = sum(n for n, _ in sizes.values())
    defs = sum(k for _, k in sizes.values())
    per_chapter = "; ".join(f"{name}: {n}, {k} defs" for name, (n, k) in sizes.items())
    assert lines <= CODE_LINE_BUDGET and defs <= DEF_BUDGET, (
        f"the chapters hold {lines} lines of code (budget {CODE_LINE_BUDGET}) and "
        f"{defs} "
        f"defs (budget {DEF_BUDGET}); move helpers into lib with tests. Per chapter: "
        f"{per_chapter}"
    )


def test_no_chapter_handles_records_with_json_or_platform():
    offenders = {
        p.relative_to(ROOT).as_posix(): sorted(
            imported_modules(_read(p)) & {"json", "platform"}
        )
        for p in TOC_NOTEBOOKS
    }
    offenders = {name: mods for name, mods in offenders.items() if mods}
    assert not offenders, f"chapters import {offenders}; use lib.records for records"


def test_readme_lists_every_lib_module():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## The library"):]
    table = table[: table.index("\n## ", 3)]
    missing = [
        p.stem
        for p in sorted((ROOT / "lib").glob("*.py"))
        if p.stem != "__init__" and f"`lib.{p.stem}`" not in table
    ]
    assert not missing, f"README's module table lacks {missing}"
