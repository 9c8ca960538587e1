"""scripts/check_html.py: answers hidden behind a click in the built HTML book."""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))
import check_html  # noqa: E402  (scripts/check_html.py)
from test_exercises import _exercise_cells  # noqa: E402

ANSWER = "secret_value = 12345 + 678"
PROSE = "The secret value is the sum of the two numbers that the hint names here"


def _chapter(tmp_path) -> Path:
    cells = _exercise_cells()
    cells[1].source = f"x = 1\n# BEGIN SOLUTION\n{ANSWER}\n# END SOLUTION"
    cells[2].source = "# Checks (exact).\nassert secret_value == 13023"
    cells[3].source = f"```{{solution}} ex-a\n:class: dropdown\n\n{PROSE}.\n```"
    path = tmp_path / "00_x.ipynb"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# T"), *cells])
    nbformat.write(nb, path)
    return path


def _page(answer_hidden=True, output_hidden=True, dropdown=True) -> str:
    def wrap(html, hidden):
        return (
            f"<details class='hide above-input'><summary>Show</summary>{html}</details>"
            if hidden
            else html
        )
    answer = f"<div class='cell_input'><pre>{ANSWER}</pre></div>"
    output = wrap("<div class='cell_output'>printed</div>", output_hidden)
    solution = "solution dropdown" if dropdown else "solution"
    return f"""<html><body><div class="exercise admonition" id="ex-a"><p>Do.</p></div>
<div class="cell tag_exercise-answer tag_hide-cell">{wrap(answer, answer_hidden)}</div>
<div class="cell tag_exercise-check tag_hide-output"><div class="cell_input"><pre>assert
</pre></div>{output}</div>
<div class="{solution} admonition" id="sol"><p>{PROSE}.</p></div>
</body></html>"""


def test_a_page_that_hides_everything_passes(tmp_path):
    assert check_html.page_problems(_page(), _chapter(tmp_path)) == []


def test_visible_answers_are_found(tmp_path):
    path = _chapter(tmp_path)
    assert any("answer line visible" in p
               for p in check_html.page_problems(_page(answer_hidden=False), path))
    assert any("check cell's output" in p
               for p in check_html.page_problems(_page(output_hidden=False), path))
    assert any("not a dropdown" in p
               for p in check_html.page_problems(_page(dropdown=False), path))
    assert any("solution text visible" in p
               for p in check_html.page_problems(_page() + f"<p>{PROSE}.</p>", path))
    assert any("1 exercises but 0 answer cells" in p
               for p in check_html.page_problems("<html></html>", path))


def test_secrets_are_answer_lines_and_solution_prose(tmp_path):
    answers, prose = check_html.secrets(_chapter(tmp_path))
    assert answers == [ANSWER] and prose == [PROSE + "."]
