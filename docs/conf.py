"""Sphinx configuration of krait's documentation: the guides (``docs/*.md``, Markdown read by
MyST-Parser) and the Python API reference (``docs/api/*.rst``, autodoc) as one site.

Build it (warnings are errors, as in the tests) from the repository root:

    python -m sphinx -W -b html docs docs/_build/html

The example site serves the same build from ``site-example/docs/`` (see README.md). Only the
pure-Python modules are imported, so the C core need not be built.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

import krait  # noqa: E402

project = "krait"
author = "the krait authors"
copyright = "the krait authors"  # noqa: A001 - Sphinx's name for it
release = krait.__version__
version = ".".join(release.split(".")[:2])

# No intersphinx: the build needs no network; references to the standard library stay text.
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.viewcode"]

root_doc = "index"
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "api/_build", "**/__pycache__"]

# MyST: GitHub's anchors for headings (``configuration.md#limits``), so the links that work on
# GitHub work in the built site too.
myst_heading_anchors = 4

autodoc_default_options = {
    "members": True,
    "member-order": "bysource",
    "show-inheritance": True,
}
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autoclass_content = "both"
add_module_names = False
python_use_unqualified_type_names = True

html_theme = "alabaster"
html_title = f"krait {release}"
html_static_path = ["_static"]  # custom.css, which alabaster links from every page
# Every page: the project, a search box, the whole table of contents, previous/next.
html_sidebars = {"**": ["about.html", "searchfield.html", "navigation.html", "relations.html"]}
html_theme_options = {
    "description": "A web server for Python sites, with a C networking core",
    "sidebar_collapse": False,
    "fixed_sidebar": False,
}
html_show_sourcelink = False


#: ``[README](../README.md)`` in a page: the README is outside this folder, and the site shows it
#: as the page ``install`` (which includes it), so the link goes there. On GitHub the same link
#: still opens README.md.
_README_LINK = re.compile(r"\]\(\.\./README\.md(#[^)\s]*)?\)")


def _link_readme(app: Any, docname: str, source: list[str]) -> None:
    if "/" not in docname:
        source[0] = _README_LINK.sub(lambda m: f"](install.md{m.group(1) or ''})", source[0])


def setup(app: Any) -> dict[str, Any]:
    app.connect("source-read", _link_readme)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
