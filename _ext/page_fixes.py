"""Two fixes of the theme's pages, found by the browser tests (browser/test_pages.py).

* Each script once per page: sphinx-thebe adds its inline configuration
  (``const THEBE_JS_URL = ...``) once per reading pass; a page that gets it twice logs
  "Identifier 'THEBE_JS_URL' has already been declared".
* A colour mode: sphinx-book-theme leaves pydata-sphinx-theme's ``default_mode`` empty,
and
  the page then logs "Got invalid theme mode". The book's figures are drawn for light
  mode.
"""
from __future__ import annotations


def _fix_page(app, pagename, templatename, context, doctree):
    if not context.get("default_mode"):
        context["default_mode"] = "light"
    if "script_files" not in context:
        return
    seen, kept = set(), []
    for script in context["script_files"]:
        key = (str(getattr(script, "filename", script) or ""),  # None and "": no file
               tuple(sorted((getattr(script, "attributes", None) or {}).items())))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"] = kept


def setup(app):
    app.connect("html-page-context", _fix_page, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
