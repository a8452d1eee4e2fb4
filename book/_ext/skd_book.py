"""Sphinx additions of the rendered book (``_config.yml``: ``sphinx.local_extensions``).

- Inline scripts are written once per page. Sphinx 7.4 keeps an inline script added after the
  builder started twice (once with ``filename=None``, once with ``filename=""``), so
  sphinx-thebe's configuration script declared ``const THEBE_JS_URL`` twice and every page logged
  "Identifier 'THEBE_JS_URL' has already been declared".
- ``skd-widgets.js``, loaded before MathJax and RequireJS: the ipywidgets' ``embed-amd.js``
  typesets widget labels with MathJax 2's ``MathJax.Hub.Queue``; the book loads MathJax 3, which
  has no ``Hub`` (the explorer logged "Cannot read properties of undefined (reading 'Queue')"),
  so a shim gives it one; and RequireJS is told where the embed lies, so that its icon fonts
  load from ``_static/widgets`` (not next to the page).
- ``skd-book.css``: tables printed by the chapters wrap long text and scroll sideways when wider
  than the page, instead of running off its edge or being clipped.
"""

from __future__ import annotations

from typing import Any


def _scripts_once(app: Any, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple[Any, ...]] = set()
    kept = []
    for script in scripts:
        filename = getattr(script, "filename", script) or ""
        attributes = getattr(script, "attributes", {})
        key = (str(filename), getattr(script, "priority", 0), *sorted(attributes.items()))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"] = kept


def setup(app: Any) -> dict[str, Any]:
    app.add_js_file("skd-widgets.js", priority=100)
    app.add_css_file("skd-book.css")
    app.connect("html-page-context", _scripts_once)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
