"""The browser checks find what they look for: a page with one defect of each kind."""
from __future__ import annotations

import base64

from test_pages import browser, page_problems, serve  # noqa: F401  (browser: a fixture)

PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d4944415478da63f8cfc0f01f0005000201a1e3e0a8"
    "0000000049454e44ae426082")).decode()

BAD_PAGE = f"""<!doctype html><html><head>
<script src="https://cdn.example.org/tex-chtml.js"></script></head><body><article>
<p>The loss is $f(\\theta)$ and <span class="math">\\(x^2\\)</span>.</p>
<img src="data:image/png;base64,{PNG}" alt="../_images/abc.png">
<pre>fine: &lt;function in code is not shown output&gt;</pre>
<div>&lt;function __main__.explore(scale=1.0)&gt;</div>
<details><summary>Show code</summary></details>
<div class="gdt-explorer"><input type="range" min="0" max="1" value="0">
<img src="data:image/png;base64,{PNG}" alt="A frame that never changes at all."></div>
<script>undefinedFunction();</script>
</article></body></html>"""


def test_checks_find_every_kind_of_defect(browser, tmp_path):  # noqa: F811
    (tmp_path / "bad.html").write_text(BAD_PAGE)
    with serve(tmp_path) as url:
        problems = "\n".join(page_problems(browser, url, tmp_path, "bad.html"))
    for expected in ["requested outside the book: https://cdn.example.org/tex-chtml.js",
                     "untypeset formula: '\\\\(x^2\\\\)'", "raw TeX in the text: '$f(",
                     "image without a meaningful alt text", "stray repr",
                     "details 0 (Show code) did not open",
                     "explorer 0: moving slider 0 did not change the figure",
                     "JavaScript error: undefinedFunction is not defined"]:
        assert expected in problems, f"{expected!r} not found in:\n{problems}"
    assert "fine:" not in problems  # code blocks are not reader text
