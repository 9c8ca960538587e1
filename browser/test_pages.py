"""The built HTML book in a real browser: headless Chromium driven by Playwright.

Run after the HTML build (``make test`` does): ``python -m pytest browser -n 0``. Every
page of
``_build/html`` is served on 127.0.0.1 and opened with every other request blocked; a
page fails if it asks for anything outside the book, logs a JavaScript error, leaves a
formula untypeset, shows an image without a meaningful alt text or a stray object repr,
has an exercise/solution/cell toggle that does not open, or an explorer whose slider
does not change its figure. The browser is ``GDT_CHROMIUM`` (default
``/usr/bin/chromium``, Debian's package).
"""
from __future__ import annotations

import contextlib
import functools
import http.server
import os
import re
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
CHROMIUM = os.environ.get("GDT_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"
]
PAGES = sorted(
    p.relative_to(HTML).as_posix() for p in HTML.rglob("*.html")
    if not p.relative_to(HTML).parts[0].startswith("_")) if HTML.is_dir() else []
REPR = re.compile(
    r"<(function|bound method|built-in function|module|class) |object at 0x"
    r"|<Figure size|<IPython\.core\.|<matplotlib\.|<ipywidgets\.|FrameExplorer\(")
RAW_TEX = re.compile(r"\$[^$\s][^$\n]*\$|\\(frac|mathrm|lambda|sum|begin)\b")

# Text the reader sees, outside code, formulas and scripts.
VISIBLE_TEXT_JS = """() => {
  const skip = "pre, code, script, style, mjx-container, .math, textarea, .highlight";
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const out = [];
  while (walker.nextNode()) {
    const el = walker.currentNode.parentElement;
    if (el && !el.closest(skip)) out.push(walker.currentNode.textContent);
  }
  return out.join(" ");
}"""
UNTYPESET_JS = """() => Array.from(document.querySelectorAll(".math"))
  .filter(e => !e.querySelector("mjx-container") || e.querySelector("mjx-merror"))
  .map(e => e.textContent.slice(0, 80))"""
# [src, alt, inside the book's text]: theme icons (launch buttons) may be short labels.
ALTS_JS = """() => Array.from(document.querySelectorAll("img")).map(i => [
  i.getAttribute("src").slice(0, 60), i.getAttribute("alt"), !!i.closest("article")])"""


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(directory: Path):
    """An HTTP server for ``directory`` on 127.0.0.1; yields its base URL."""
    handler = functools.partial(_Quiet, directory=str(directory))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def server():
    if not PAGES:
        pytest.fail(
            "no HTML book in _build/html: build it first (scripts/build_book.py)")
    with serve(HTML) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"no Chromium at {CHROMIUM}: apt-get install chromium (or set GDT_CHROMIUM)"
        )
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


def _open(browser, server, root, rel):
    """The loaded page, the requests it tried outside the book, its JavaScript
    errors."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    outside, errors = [], []

    def route(r):
        if r.request.url.startswith(server):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server + rel, wait_until="load")
    refresh = re.search(r'http-equiv="refresh" content="0; url=([^"]+)"',
                        (root / rel).read_text(encoding="utf-8"), re.I)
    if refresh:  # a redirect (index.html): check the page it leads to
        page.wait_for_url(server + refresh[1], wait_until="load")
    page.evaluate("async () => { if (window.MathJax && MathJax.startup) "
                  "await MathJax.startup.promise; }")
    page.wait_for_timeout(200)
    return page, outside, errors


def _check_toggles(page) -> list[str]:
    """Click every toggle (solution drop-downs, hidden cells) at once; each must
    open."""
    return page.evaluate("""async () => {
      const buttons = Array.from(document.querySelectorAll("button.toggle-button"));
      const details = Array.from(document.querySelectorAll("details"));
      buttons.forEach(b => b.click());
      details.forEach(d => d.querySelector("summary").click());
      await new Promise(r => setTimeout(r, 400));
      const problems = [];
      buttons.forEach((b, i) => {
        const box = b.closest(".toggle, .admonition") || b.parentElement;
        const body = Array.from(box.children).filter(c => c !== b && !c.contains(b)
          && !c.classList.contains("admonition-title"));
        if (body.length === 0 || body.every(c => c.offsetHeight === 0))
          problems.push(`toggle ${i} (${b.innerText.slice(0, 40)}) did not open`);
      });
      details.forEach((d, i) => {
        if (!d.open || !Array.from(d.children).some(
              c => c.tagName !== "SUMMARY" && c.offsetHeight > 0))
          problems.push(`details ${i} (${d.innerText.slice(0, 40)}) did not open`);
      });
      return problems;
    }""")


def _check_explorers(page) -> list[str]:
    problems = []
    explorers = page.locator(".gdt-explorer")
    for i in range(explorers.count()):
        explorer = explorers.nth(i)
        shown = "e => Array.from(e.querySelectorAll('img')).filter(i => !i.hidden)" \
                ".map(i => i.src)"
        before = explorer.evaluate(shown)
        sliders = explorer.locator("input[type=range]")
        for s in range(sliders.count()):
            slider = sliders.nth(s)
            slider.scroll_into_view_if_needed()
            value, top = int(slider.input_value()), int(slider.get_attribute("max"))
            slider.fill(str(value + 1 if value < top else value - 1))
            after = explorer.evaluate(shown)
            if len(after) != 1 or after == before:
                problems.append(
                    f"explorer {i}: moving slider {s} did not change the figure")
            before = after
    return problems


def page_problems(browser, server: str, root: Path, rel: str) -> list[str]:
    """Everything wrong with page ``rel`` of the site in ``root`` served at
    ``server``."""
    page, outside, errors = _open(browser, server, root, rel)
    try:
        problems = [f"requested outside the book: {url}" for url in outside]
        problems += [f"untypeset formula: {t!r}" for t in page.evaluate(UNTYPESET_JS)]
        text = page.evaluate(VISIBLE_TEXT_JS)
        problems += [
            f"raw TeX in the text: {m.group(0)!r}" for m in RAW_TEX.finditer(text)
        ]
        problems += [f"stray repr: {text[max(0, m.start() - 20):m.end() + 40]!r}"
                     for m in REPR.finditer(text)]
        for src, alt, content in page.evaluate(ALTS_JS):
            words = (alt or "").split()
            if (len(words) < (4 if content else 1)
                    or re.search(r"\.(png|jpe?g|svg|gif)\b|_images/", alt or "")):
                problems.append(
                    f"image without a meaningful alt text: {src!r} alt={alt!r}")
        problems += _check_explorers(page)
        problems += _check_toggles(page)
        problems += [f"JavaScript error: {e}" for e in errors]  # also while clicking
    finally:
        page.close()
    return problems


@pytest.mark.parametrize("rel", PAGES)
def test_page_in_browser(browser, server, rel):
    problems = page_problems(browser, server, HTML, rel)
    assert not problems, f"{rel}:\n  " + "\n  ".join(problems)
