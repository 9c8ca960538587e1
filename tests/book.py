"""Helpers shared by the root ``conftest.py``, ``scripts/`` and the book-structure
tests.

* ``_toc.yml`` parsing: :func:`toc_entries`, :func:`toc_files`, :func:`toc_notebooks`.
* Turning the outputs nbval captured into an executed notebook:
:func:`executed_notebook`.

Only the standard library, PyYAML and nbformat are imported here (all installed with
jupyter-book), so importing this module is cheap.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Iterable, Mapping, Optional

import nbformat
import yaml

#: Suffixes a ``file:`` entry of ``_toc.yml`` may resolve to, in order of preference.
TOC_SUFFIXES = (".ipynb", ".md")
# : Where ``conftest.py`` writes the notebooks nbval executed (relative to the book
# root).
EXECUTED_DIR = Path("_build") / "executed"
#: Output mime type of ipywidgets views; they need widget state nbval cannot capture.
WIDGET_VIEW_MIMETYPE = "application/vnd.jupyter.widget-view+json"


# --------------------------------------------------------------------------- _toc.yml
def load_toc(root: Path | str) -> dict:
    """Parse ``<root>/_toc.yml``; raise ``FileNotFoundError``/``ValueError`` if
    absent or malformed."""
    path = Path(root) / "_toc.yml"
    with open(path, encoding="utf-8") as f:
        toc = yaml.safe_load(f)
    if not isinstance(toc, dict) or "root" not in toc:
        raise ValueError(f"{path}: expected a mapping with a 'root:' key, got {toc!r}")
    return toc


def _strip_suffix(docname: str) -> str:
    docname = docname.strip()
    if docname.startswith("./"):
        docname = docname[2:]
    for suffix in TOC_SUFFIXES + (".rst",):
        if docname.endswith(suffix):
            return docname[: -len(suffix)]
    return docname


def _walk(node, root: Path, out: list[str]) -> None:
    """Depth-first walk over ``chapters:``/``parts:``/``sections:`` collecting
    ``file:``/``glob:``."""
    if isinstance(node, list):
        for child in node:
            _walk(child, root, out)
        return
    if not isinstance(node, dict):
        return
    if "file" in node:
        out.append(_strip_suffix(str(node["file"])))
    if "glob" in node:
        for match in sorted(root.glob(str(node["glob"]))):
            if match.suffix in TOC_SUFFIXES and ".ipynb_checkpoints" not in match.parts:
                name = match.relative_to(root).with_suffix("").as_posix()
                if name not in out:
                    out.append(name)
    for key in ("parts", "chapters", "sections"):
        if key in node:
            _walk(node[key], root, out)


def toc_entries(root: Path | str) -> list[str]:
    """Docnames listed in ``_toc.yml`` (root first, then in toc order), without
    suffix."""
    root = Path(root)
    toc = load_toc(root)
    out = [_strip_suffix(str(toc["root"]))]
    for key in ("parts", "chapters", "sections"):
        if key in toc:
            _walk(toc[key], root, out)
    return list(dict.fromkeys(out))  # drop duplicates, keep order


def resolve_entry(root: Path | str, docname: str) -> Optional[Path]:
    """The existing file for a toc docname (``.ipynb`` preferred over ``.md``), or
    ``None``."""
    root = Path(root)
    for suffix in TOC_SUFFIXES:
        candidate = root / f"{docname}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def missing_toc_entries(root: Path | str) -> list[str]:
    """Docnames listed in ``_toc.yml`` that match no ``.ipynb``/``.md`` file."""
    return [d for d in toc_entries(root) if resolve_entry(root, d) is None]


def toc_files(root: Path | str) -> list[Path]:
    """Existing files listed in ``_toc.yml``, suffix resolved (``.ipynb`` or
    ``.md``), toc order."""
    files = (resolve_entry(root, d) for d in toc_entries(root))
    return [f for f in files if f is not None]


def toc_notebooks(root: Path | str) -> list[Path]:
    """The ``.ipynb`` files among :func:`toc_files`."""
    return [f for f in toc_files(root) if f.suffix == ".ipynb"]


def executed_path(root: Path | str, notebook: Path | str) -> Path:
    """``<root>/_build/executed/<notebook relative to root>``."""
    root = Path(root).resolve()
    return root / EXECUTED_DIR / Path(notebook).resolve().relative_to(root)


# --------------------------------------------------------------- executed notebooks
def _as_text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def normalize_output(output: Mapping,
                     execution_count: Optional[int]) -> Optional[nbformat.NotebookNode]:
    """One captured output made valid nbformat v4 (``None`` to drop it).

    Widget views (ipywidgets, tqdm.auto bars) are dropped: nbval does not record the
    widget state they need, so the static HTML could not render them, and their
    text/plain is only the widget's repr. CONTRIBUTING.md asks for a static figure
    before every widget cell. Outputs an ``interact`` function prints or plots on
    its first call are kept.
    """
    out = dict(output)
    kind = out.get("output_type")
    if kind == "stream":
        new = {
            "output_type": "stream",
            "name": out.get("name", "stdout"),
            "text": _as_text(out.get("text", ""))
        }
        if new["name"] not in ("stdout", "stderr"):
            new["name"] = "stdout"
    elif kind in ("display_data", "execute_result", "update_display_data"):
        data = dict(out.get("data") or {})
        if not data or WIDGET_VIEW_MIMETYPE in data:
            # its text/plain is only the widget's repr (or a stale
            # progress bar)
            return None
        new = {"output_type": "display_data" if kind != "execute_result" else kind,
               "data": data, "metadata": dict(out.get("metadata") or {})}
        if kind == "execute_result":
            new["execution_count"] = execution_count
    elif kind == "error":
        new = {"output_type": "error", "ename": str(out.get("ename", "")),
               "evalue": str(out.get("evalue", "")),
               "traceback": [str(line) for line in out.get("traceback") or []]}
    else:  # clear_output, comm messages, ...: not notebook outputs
        return None
    return nbformat.from_dict(copy.deepcopy(new))


def executed_notebook(
    nb: nbformat.NotebookNode,
    outputs_by_cell: Mapping[int, Optional[Iterable[Mapping]]],
    metadata: Optional[Mapping] = None,
) -> nbformat.NotebookNode:
    """A copy of ``nb`` with the outputs nbval captured filled in.

    ``outputs_by_cell`` maps nbval's cell number (index among *code* cells) to the
    list of outputs of that cell, or ``None`` if it did not run (skipped, never
    reached). Code cells that ran get consecutive ``execution_count`` values; the
    others get ``None`` and ``[]``.
    ``metadata`` is stored under ``nb.metadata["gdt_execution"]``. The result is
    validated.
    """
    nb = copy.deepcopy(nb)
    count = 0
    code_index = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            cell.pop("outputs", None)
            cell.pop("execution_count", None)
            continue
        outs = outputs_by_cell.get(code_index)
        code_index += 1
        if outs is None:
            cell.outputs, cell.execution_count = [], None
            continue
        count += 1
        cell.execution_count = count
        normalized = (normalize_output(o, count) for o in outs)
        cell.outputs = [o for o in normalized if o is not None]
    nb.metadata.setdefault(
        "language_info", {
            "name": "python",
            "pygments_lexer": "ipython3",
            "file_extension": ".py",
            "mimetype": "text/x-python",
            "codemirror_mode": {
                "name": "ipython",
                "version": 3
            },
            "nbconvert_exporter": "python",
        })
    nb.metadata.pop("widgets",
                    None)  # stale widget state would not match the new outputs
    if metadata is not None:
        nb.metadata["gdt_execution"] = dict(metadata)
    nbformat.validate(nb)
    return nb


def write_notebook(nb: nbformat.NotebookNode, path: Path | str) -> None:
    """Write ``nb`` atomically (a reader never sees a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    nbformat.write(nb, str(tmp))
    tmp.replace(path)


def cell_sources(nb: nbformat.NotebookNode) -> list[str]:
    """Type and source of every cell; equal lists mean the executed copy is not
    stale."""
    return [f"{c.cell_type}\n{c.source}" for c in nb.cells]
