"""scripts/wrap_lines.py: long lines wrapped, meaning kept, nothing else touched."""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import wrap_lines  # noqa: E402

# "~" stands for padding that pushes a line past 88 characters (this file stays short).
LONG = '''def f(alpha, beta, gamma):
    """A docstring line that is much too long for the book's code blocks~.
    The second line of the same paragraph.
    """
    short = 1
    value = some_function(alpha_argument=alpha, beta_argument=beta, x~=1)
    print(f"the value is {value:.3f} and the other one {short:.3f}, in one~")
    return value  # a trailing comment that makes this line much longer than the limit~
'''.replace("~", "_and_more" * 3)


def test_long_lines_are_wrapped_and_the_meaning_kept():
    new = wrap_lines.wrap_source(LONG)
    assert not wrap_lines._too_long(new)
    assert wrap_lines._meaning(new) == wrap_lines._meaning(LONG)
    assert "    short = 1\n" in new  # untouched
    assert "    # a trailing comment that makes" in new
    assert "    The second line" not in new  # the paragraph was re-flowed


def test_what_cannot_be_wrapped_is_left_alone():
    magic = "%timeit " + "x" * 100
    assert wrap_lines.wrap_source(magic) == magic
    short = "x = 1\n"
    assert wrap_lines.wrap_source(short) == short


def test_notebook_cells(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# " + "t" * 100),
        nbformat.v4.new_code_cell(LONG)
    ])
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, path)
    assert wrap_lines.main([str(path)]) == 0
    cells = nbformat.read(path, 4).cells
    assert cells[0].source == "# " + "t" * 100  # markdown is not code
    assert not wrap_lines._too_long(cells[1].source)
