"""Every figure has a one-sentence alt text; the references page is for readers."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import book  # noqa: E402  (tests/book.py)

NB_IDS = [p.relative_to(ROOT).as_posix() for p in book.toc_notebooks(ROOT)]


def alt_text_problem(alt: object) -> str | None:
    """Why ``alt`` is not a one-sentence description of a figure (None if it is)."""
    if not isinstance(alt, str) or len(alt.split()) < 5:
        return "no alt text of at least five words"
    if not alt.endswith(".") or re.search(r"[.!?]\s+[A-Z]", alt):
        return "not one sentence ending with a full stop"
    if re.search(r"[$\\{}]|\.(png|svg|jpe?g)\b", alt) or len(alt) > 250:
        return "markup, a file name, or longer than 250 characters"
    return None


def figure_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    """Code cells that show a figure in the HTML (a caption, or plt.show())."""
    return [c for c in nb.cells if c.cell_type == "code"
            and "remove-output" not in c.metadata.get("tags", [])
            and ("caption" in c.metadata.get("mystnb", {}).get("figure", {})
                 or re.search(r"\bplt\.show\(\)|\bdisplay\(fig\b", c.source))]


@pytest.mark.parametrize("rel", NB_IDS)
def test_every_figure_has_a_one_sentence_alt_text(rel):
    nb = nbformat.read(ROOT / rel, as_version=4)
    problems = []
    for cell in figure_cells(nb):
        alt = cell.metadata.get("mystnb", {}).get("image", {}).get("alt")
        if (why := alt_text_problem(alt)) is not None:
            first = cell.source.splitlines()[0] if cell.source else ""
            problems.append(f"cell {cell.get('id')} ({first[:50]!r}): {why}")
    assert not problems, (f"{rel}: set cell metadata mystnb.image.alt to one sentence "
                          "describing the figure:\n  " + "\n  ".join(problems))


def test_alt_text_rule():
    assert alt_text_problem("Loss curves of both kernels on a log scale.") is None
    assert alt_text_problem("../_images/abc.png") is not None
    assert alt_text_problem("Loss curves on a log scale. Blue is Softmax.") is not None
    assert alt_text_problem("The loss $f$ against the step t.") is not None


def test_references_page_is_for_readers():
    text = (ROOT / "references.md").read_text(encoding="utf-8")
    assert (
        "{bibliography}" in text
        and "cite with" not in text
        and "references.bib" not in text
    )
