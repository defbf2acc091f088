"""Sphinx configuration of krait's Python API reference.

Build it (warnings are errors, as in CI) from the repository root:

    sphinx-build -W -b html docs/api docs/api/_build

Only the pure-Python modules are imported, so the C core need not be built.
"""

import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

import krait  # noqa: E402

project = "krait"
author = "the krait authors"
copyright = "the krait authors"  # noqa: A001 - Sphinx's name for it
release = krait.__version__
version = ".".join(release.split(".")[:2])

# No intersphinx: the build needs no network; references to the standard library stay text.
extensions = ["sphinx.ext.autodoc", "sphinx.ext.viewcode"]

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

exclude_patterns = ["_build"]
html_theme = "alabaster"
html_title = f"krait {release} — Python API"
html_static_path: list[str] = []
