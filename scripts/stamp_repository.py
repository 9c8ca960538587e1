#!/usr/bin/env python3
"""Stamp where the book lives into every place that repeats it.

The one source is ``_config.yml``: ``repository.url`` and ``repository.branch`` (the
release ref, a tag). Stamped:

* the bootstrap cell, the first code cell of every notebook under ``chapters/`` (and its
  copy in CONTRIBUTING.md): it clones that URL at that ref when not run in a checkout;
* ``pyproject.toml`` (``[project.urls]``);
* the preface: the ``git clone`` line and the citation of the book.

Run ``python scripts/stamp_repository.py`` after changing ``_config.yml``;
``--check`` changes nothing and exits 1 naming the files that disagree (a test runs it).
At run time ``GDT_BOOK_REPO`` and ``GDT_BOOK_REF`` override both in the bootstrap cell.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent

# The first code cell of every notebook (tagged remove-cell). No `def`: it counts in the
# chapters' budgets. __REPO__ and __REF__ are filled in from _config.yml.
BOOTSTRAP = '''\
# Make this book's `lib` importable: from a checkout, or (Colab) install its release.
import os, pathlib, shutil, subprocess, sys
REPO = (os.environ.get("GDT_BOOK_REPO")
        or "__REPO__")
REF = os.environ.get("GDT_BOOK_REF") or "__REF__"
here = pathlib.Path.cwd()
found = next((p for p in [here, *here.parents] if (p / "lib/BOOK.txt").is_file()), None)
root = found or here / "gdt-book"
if not found and not (root / ".installed").is_file():  # once; a failed run starts over
    shutil.rmtree(root, ignore_errors=True)
    if not shutil.which("git"):
        raise RuntimeError("git not found: install it, or open this in a book checkout")
    for cmd in (["git", "clone", "-q", "--depth=1", "--branch", REF, REPO, str(root)],
                [sys.executable, "-m", "pip", "install", "-q", "-e", str(root)]):
        if (run := subprocess.run(cmd, capture_output=True, text=True)).returncode:
            step = "git clone" if cmd[0] == "git" else "pip install"
            raise RuntimeError(f"{step} failed: offline, or no {REF} at {REPO}? Fix "
                               "or set GDT_BOOK_REPO / GDT_BOOK_REF, then re-run:\\n"
                               + run.stderr[-600:])
    (root / ".installed").touch()
sys.path.insert(0, str(root))
for name in [m for m in sys.modules if m.split(".")[0] == "lib"]:
    del sys.modules[name]  # e.g. a namespace package from a stray `lib/` folder
import lib
assert pathlib.Path(lib.__file__).parent == root / "lib", f"wrong lib: {lib.__file__}"
'''

PREFACE = "chapters/00_preface.ipynb"


def repository(root: Path = ROOT) -> tuple[str, str]:
    """(url, release ref) from ``_config.yml``."""
    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8"))
    repo = config.get("repository") or {}
    url, ref = repo.get("url"), repo.get("branch")
    if not url or not ref:
        raise ValueError("_config.yml: set repository.url and repository.branch")
    return str(url), str(ref)


def bootstrap_source(url: str, ref: str) -> str:
    """The bootstrap cell for ``url`` at ``ref``."""
    return BOOTSTRAP.replace("__REPO__", url).replace("__REF__", ref).rstrip("\n")


def _stamp_text(text: str, url: str, ref: str) -> str:
    text = re.sub(r"git clone --branch \S+ \S+ gdt-book",
                  f"git clone --branch {ref} {url} gdt-book", text)
    text = re.sub(r"(howpublished = \{\\url\{)[^}]*", rf"\g<1>{url}", text)
    return re.sub(r"(version      = \{)[^}]*", rf"\g<1>{ref}", text)


def stamped_files(root: Path, url: str, ref: str) -> dict[Path, str]:
    """Every stamped file and the text it should have."""
    cell = bootstrap_source(url, ref)
    out = {}
    for path in sorted((root / "chapters").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        if not code:
            continue
        code[0].source = cell
        if path.relative_to(root).as_posix() == PREFACE:
            for c in nb.cells:
                if c.cell_type == "markdown":
                    c.source = _stamp_text(c.source, url, ref)
        out[path] = nbformat.writes(nb) + "\n"
    contributing = root / "CONTRIBUTING.md"
    text = contributing.read_text(encoding="utf-8")
    out[contributing] = re.sub(r"(^#+ The bootstrap cell.*?^```python\n)(.*?)(^```)",
                               lambda m: m[1] + cell + "\n" + m[3], text, count=1,
                               flags=re.S | re.M)
    pyproject = root / "pyproject.toml"
    out[pyproject] = re.sub(r'(?m)^(Repository = ")[^"]*', rf"\g<1>{url}",
                            pyproject.read_text(encoding="utf-8"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if a file disagrees")
    parser.add_argument("--root", type=Path, default=ROOT)
    args = parser.parse_args(argv)
    url, ref = repository(args.root)
    stale = []
    for path, text in stamped_files(args.root, url, ref).items():
        old = path.read_text(encoding="utf-8")
        if path.suffix == ".ipynb":  # compare content, not JSON layout
            old, text = nbformat.reads(old, 4), nbformat.reads(text, 4)
        if old != text:
            stale.append(path.relative_to(args.root).as_posix())
            if not args.check:
                if path.suffix == ".ipynb":
                    nbformat.write(text, path)
                else:
                    path.write_text(text, encoding="utf-8")
    verb = "disagree with _config.yml (run scripts/stamp_repository.py)" if args.check \
        else "stamped"
    if stale:
        print(f"{verb}: {', '.join(stale)}", file=sys.stderr if args.check else None)
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
