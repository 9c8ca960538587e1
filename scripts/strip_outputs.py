#!/usr/bin/env python3
"""Clear outputs, execution counts and widget state of notebooks, in place.

Usage: python scripts/strip_outputs.py chapters/*.ipynb      (or: make strip)

Stored notebooks carry no outputs (tests/test_book_structure.py checks it): nbval then
has nothing stale to compare, and diffs stay readable. Exit status 0; prints what
changed.
"""
from __future__ import annotations

import argparse
import sys

import nbformat

#: Notebook-level metadata written by front ends or executors, not by authors.
VOLATILE_NB_METADATA = ("widgets", "gdt_execution", "execution")
#: Cell-level metadata written by front ends or executors.
VOLATILE_CELL_METADATA = ("execution", "collapsed", "scrolled", "ExecuteTime")


def strip(nb: nbformat.NotebookNode) -> bool:
    """Strip ``nb`` in place; return whether anything changed."""
    changed = False
    for key in VOLATILE_NB_METADATA:
        changed |= nb.metadata.pop(key, None) is not None
    for cell in nb.cells:
        for key in VOLATILE_CELL_METADATA:
            changed |= cell.metadata.pop(key, None) is not None
        if cell.cell_type == "code":
            if cell.get("outputs") or cell.get("execution_count") is not None:
                changed = True
            cell.outputs, cell.execution_count = [], None
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", help="notebook files to strip in place")
    args = parser.parse_args(argv)
    for path in args.notebooks:
        nb = nbformat.read(path, as_version=4)
        if strip(nb):
            nbformat.validate(nb)
            nbformat.write(nb, path)
            print(f"stripped {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
