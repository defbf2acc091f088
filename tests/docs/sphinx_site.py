"""Builds the documentation site (docs/: the Markdown guides and the API reference) with Sphinx,
warnings as errors, once per test session: the test of the site itself and the tests of the
example site that serves it share the build."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"


@dataclass
class Build:
    html: Path          # the site: index.html, search.html, api/, _static/ ...
    returncode: int
    output: str         # sphinx-build's warnings and errors

    def check(self) -> Path:
        """The built site; fails the calling test with Sphinx's messages if the build failed."""
        assert self.returncode == 0, f"sphinx-build -W failed:\n{self.output}"
        return self.html


def build(out: Path) -> Build:
    """``python -m sphinx -W -b html docs OUT/html`` (doctrees beside it, never in docs/)."""
    done = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(out / "doctrees"), str(DOCS), str(out / "html")],
        capture_output=True, text=True, timeout=600)
    return Build(out / "html", done.returncode, done.stdout + done.stderr)
